"""ASGD, Rprop, Schedule-Free AdamW and SGD: against a NumPy reference (same
bits in the kernels' dtype and order of operations, close to float64 math), on
every ISA and thread count, at the edge sizes, and against the outside
references (torch 2.13's ASGD/Rprop, the schedulefree package) over 100+
float32 steps."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from conftest import EDGE_SIZES, ISAS, THREADS, assert_steps_agree_everywhere, run_everywhere
from slimgrad import optim
from test_optim import normwise

pytestmark = pytest.mark.usefixtures("torch_single_thread")

STEPS = 120
TOL = 2e-5  # normwise relative error against the outside references (float32)

CONFIGS = [
    ("ASGD", dict(lr=0.05)),
    ("ASGD", dict(lr=0.05, lambd=1e-2, alpha=0.5, t0=30, weight_decay=0.1)),
    ("ASGD", dict(lr=0.02, t0=10, maximize=True)),
    ("Rprop", dict()),
    ("Rprop", dict(lr=0.1, etas=(0.3, 1.5), step_sizes=(1e-3, 0.05), maximize=True)),
    ("AdamWScheduleFree", dict(lr=0.01)),
    (
        "AdamWScheduleFree",
        dict(lr=0.02, betas=(0.8, 0.99), weight_decay=0.1, warmup_steps=20, r=0.5),
    ),
    ("AdamWScheduleFree", dict(lr=0.01, betas=(0.3, 0.9), eps=1e-6, weight_lr_power=1.0)),
    # Steep weights: ckp1 > 0.5 for ~40 steps (the other branch of torch's lerp).
    ("AdamWScheduleFree", dict(lr=0.01, warmup_steps=100, r=10.0, weight_lr_power=10.0)),
    ("SGDScheduleFree", dict(lr=0.05)),
    ("SGDScheduleFree", dict(lr=0.05, warmup_steps=100, r=10.0, weight_lr_power=10.0)),
    ("SGDScheduleFree", dict(lr=0.05, momentum=0.7, weight_decay=0.1, warmup_steps=10, r=1.0)),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'defaults'}" for n, kw in CONFIGS]
SF = ("AdamWScheduleFree", "SGDScheduleFree")


def problem(n, dtype, steps=STEPS, seed=0):
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(n).astype(dtype)
    grads = []
    for _ in range(steps):
        g = rng.standard_normal(n) * rng.uniform(0.1, 3)
        g[rng.random(n) < 0.05] = 0  # exact zeros: Rprop's sign(0) paths
        grads.append(g.astype(dtype))
    return p0, grads


def make(name, params, **kw):
    opt = getattr(optim, name)(params, **kw)
    if name in SF:
        opt.train()
    return opt


# ------------------------------------------------------------ the reference
class Reference:
    """The kernels' update in NumPy: in the param dtype with the kernels' order of
    operations (same bits), or in float64 (exact-math yardstick)."""

    def __init__(self, name, kw, p0, dtype):
        self.name, self.dt, self.t = name, np.dtype(dtype), 0
        d = dict(getattr(optim, name)([np.zeros(1, np.float32)]).defaults)
        d.update(kw)
        self.o = d
        self.p = p0.astype(dtype)
        z = np.zeros_like(self.p)
        if name == "ASGD":
            self.s = [z.copy()]
            self.eta, self.mu = float(np.float32(d["lr"])), 1.0
        elif name == "Rprop":
            self.s = [z.copy(), np.full_like(self.p, d["lr"])]
        else:
            self.s = [self.p.copy(), z.copy()]
            self.k, self.lr_max, self.weight_sum = 0, -1.0, 0.0

    def lerp(self, a, b, w):
        T = self.dt.type
        return a + T(w) * (b - a) if w < 0.5 else b - (b - a) * (T(1) - T(w))

    def step(self, g):
        T, o, p, s = self.dt.type, self.o, self.p, self.s
        g = g.astype(self.dt)
        self.t += 1
        if self.name in SF:
            return self._sf(g)
        if o["maximize"]:
            g = -g
        if self.name == "ASGD":
            if o["weight_decay"]:
                g = g + T(o["weight_decay"]) * p
            p = p * T(1 - o["lambd"] * self.eta)
            p = p + T(-self.eta) * g
            s[0] = s[0] + (p - s[0]) * T(self.mu) if self.mu != 1 else p.copy()
            lr, t = o["lr"], self.t
            self.eta = float(np.float32(lr / ((1 + o["lambd"] * lr * t) ** o["alpha"])))
            self.mu = float(np.float32(1 / max(1, t - o["t0"])))
        else:
            (em, ep), (lo, hi) = o["etas"], o["step_sizes"]
            prod = g * s[0]
            f = np.where(prod > 0, T(ep), np.where(prod < 0, T(em), T(1))).astype(self.dt)
            ss = s[1] * f
            ss = np.where(ss < T(lo), T(lo), ss)
            ss = np.where(ss > T(hi), T(hi), ss).astype(self.dt)
            gm = np.where(prod < 0, T(0), g).astype(self.dt)
            p = p - np.sign(gm) * ss
            s[0], s[1] = gm, ss
        self.p = p

    def _sf(self, g):
        T, o, p, s = self.dt.type, self.o, self.p, self.s
        k = self.k
        lr = o["lr"] * ((k + 1) / o["warmup_steps"] if k < o["warmup_steps"] else 1.0)
        self.lr_max = max(lr, self.lr_max)
        weight = (k + 1) ** o["r"] * self.lr_max ** o["weight_lr_power"]
        self.weight_sum += weight
        ckp1 = weight / self.weight_sum if self.weight_sum else 0.0
        self.k += 1
        wd = o["weight_decay"]
        if self.name == "AdamWScheduleFree":
            b1, b2 = o["betas"]
            s[1] = s[1] * T(b2) + (T(1 - b2) * g) * g
            u = g / (np.sqrt(s[1] / T(1 - b2 ** (k + 1))) + T(o["eps"]))
            if wd:
                u = u + T(wd) * p
        else:
            b1 = o["momentum"]
            u = g + T(wd) * p if wd else g
        z = s[0]
        p = self.lerp(p, z, ckp1)
        s[0] = z - T(lr) * u
        self.p = p + T(lr * (b1 * (1 - ckp1) - 1)) * u

    def x(self):
        """The evaluation point (eval mode) of a Schedule-Free run."""
        b = self.o["betas"][0] if self.name == "AdamWScheduleFree" else self.o["momentum"]
        return self.lerp(self.p, self.s[0], 1 - 1 / b)


def run_ours(name, kw, p0, grads, **extra):
    p = p0.copy()
    opt = make(name, [p], **kw, **extra)
    for g in grads:
        assert opt.step([g]) is True
    return p, opt


def run_reference(name, kw, p0, grads, dtype):
    ref = Reference(name, kw, p0, dtype)
    for g in grads:
        ref.step(g)
    return ref


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize(("name", "kw"), CONFIGS, ids=IDS)
def test_matches_numpy_reference(name, kw, dtype):
    p0, grads = problem(1000, dtype, seed=1)
    ours, opt = run_ours(name, kw, p0, grads)
    ref = run_reference(name, kw, p0, grads, dtype)
    np.testing.assert_array_equal(ours, ref.p)
    for key, want in zip(opt._state_keys(opt.param_groups[0]), ref.s):
        np.testing.assert_array_equal(opt.state[0][key], want)
    exact = run_reference(name, kw, p0, grads, np.float64)
    assert normwise(ours, exact.p) < (TOL if dtype == np.float32 else 1e-12)


# ---------------------------------------------------- every ISA and thread count
RICH = {
    "ASGD": dict(lr=0.05, lambd=1e-2, t0=1, weight_decay=0.1, maximize=True),
    "Rprop": dict(lr=0.1, etas=(0.3, 1.5), step_sizes=(1e-3, 0.05)),
    "AdamWScheduleFree": dict(lr=0.02, weight_decay=0.1, warmup_steps=2),
    "SGDScheduleFree": dict(lr=0.05, weight_decay=0.1, warmup_steps=2),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(RICH))
def test_every_isa_and_thread_count_gives_the_same_bits(name, dtype):
    kw = RICH[name]
    p0, grads = problem(70_001 + 13, dtype, steps=4)  # the first array spans 3 work pieces

    reference = run_reference(name, kw, p0, grads, dtype).p
    assert_steps_agree_everywhere(lambda ps: make(name, ps, **kw), p0, grads, reference)


@pytest.mark.parametrize("n", sorted({0, 1, 15, 16, 17, 33, *EDGE_SIZES[-3:]}))
@pytest.mark.parametrize("name", list(RICH))
def test_edge_sizes(isa, name, n):
    p0, grads = problem(n, np.float32, steps=3, seed=n)
    ours, _ = run_ours(name, RICH[name], p0, grads)
    np.testing.assert_array_equal(ours, run_reference(name, RICH[name], p0, grads, np.float32).p)


# ------------------------------------------------------ float16 / bfloat16 params
HALVES = [np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)]


@pytest.mark.parametrize("half", HALVES, ids=["float16", "bfloat16"])
@pytest.mark.parametrize("name", list(RICH))
def test_half_params_step_their_float32_master(isa, name, half):
    p0, grads = problem(1037, np.float32, steps=6, seed=3)
    p0 = p0.astype(half)
    hgrads = [g.astype(half) for g in grads]
    p = p0.copy()
    opt = make(name, [p], **RICH[name])
    for g in hgrads:
        opt.step([g])
    master = opt.state[0]["master"]
    # The master follows the float32 math on the widened gradients; p is it rounded.
    ref = run_reference(name, RICH[name], p0.astype(np.float32), hgrads, np.float32)
    np.testing.assert_array_equal(master, ref.p)
    np.testing.assert_array_equal(p, master.astype(half))


@pytest.mark.parametrize("name", list(RICH))
def test_half_options_same_bits_on_every_isa(name):
    # No master copy, bfloat16 state, stochastic rounding: the family's paths.
    p0, grads = problem(4099, np.float32, steps=3, seed=5)
    p0 = p0.astype(ml_dtypes.bfloat16)

    def run():
        p = p0.copy()
        opt = make(
            name,
            [p],
            **RICH[name],
            master_weights=False,
            state_dtype="bfloat16",
            rounding="stochastic",
            seed=7,
        )
        for g in grads:
            opt.step([g.astype(ml_dtypes.bfloat16)])
        return p.view(np.uint16).copy()

    results = run_everywhere(run)
    first = results[(ISAS[0], THREADS[0])]
    for key, r in results.items():
        np.testing.assert_array_equal(r, first, err_msg=str(key))


# ------------------------------------------------------------- torch 2.13
TORCH_CONFIGS = [(n, kw) for n, kw in CONFIGS if n in ("ASGD", "Rprop")]


@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
@pytest.mark.parametrize(("name", "kw"), TORCH_CONFIGS, ids=IDS[: len(TORCH_CONFIGS)])
def test_matches_torch(name, kw, foreach):
    torch = pytest.importorskip("torch")
    p0, grads = problem(1000, np.float32)
    ours, opt = run_ours(name, kw, p0, grads)
    tp = torch.from_numpy(p0.copy()).requires_grad_()
    topt = getattr(torch.optim, name)([tp], **kw, foreach=foreach)
    for g in grads:
        tp.grad = torch.from_numpy(g.copy())
        topt.step()
    assert normwise(ours, tp.detach().numpy()) < TOL
    tst = topt.state[tp]
    for key in opt._state_keys(opt.param_groups[0]):
        assert normwise(opt.state[0][key], tst[key].numpy()) < TOL, key
    if name == "ASGD":
        # The for-loop computes eta in float64 and rounds it as we do; foreach in float32.
        rel = 1e-6 if foreach else 0
        assert opt.state[0]["eta"] == pytest.approx(tst["eta"].item(), rel=rel, abs=0)
        assert opt.state[0]["mu"] == pytest.approx(tst["mu"].item(), rel=rel, abs=0)
    assert opt.state[0]["step"] == int(tst["step"])


# --------------------------------------------------------------- schedulefree
SF_CONFIGS = [(n, kw) for n, kw in CONFIGS if n in SF]
SF_IDS = [i for i, (n, _) in zip(IDS, CONFIGS) if n in SF]


@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
@pytest.mark.parametrize(("name", "kw"), SF_CONFIGS, ids=SF_IDS)
def test_matches_schedulefree_with_eval_switches(name, kw, foreach):
    torch = pytest.importorskip("torch")
    sf = pytest.importorskip("schedulefree")
    p0, grads = problem(1000, np.float32, seed=2)
    p = p0.copy()
    opt = getattr(optim, name)([p], **kw)
    tp = torch.from_numpy(p0.copy()).requires_grad_()
    topt = getattr(sf, name)([tp], **kw, foreach=foreach)
    opt.train()
    topt.train()
    for i, g in enumerate(grads):
        if i in (40, 41, 90):  # eval and back mid-run (twice in a row at 40, 41)
            opt.eval()
            topt.eval()
            assert normwise(p, tp.detach().numpy()) < TOL
            opt.train()
            topt.train()
        opt.step([g])
        tp.grad = torch.from_numpy(g.copy())  # schedulefree modifies grads in place
        topt.step()
    assert normwise(p, tp.detach().numpy()) < TOL  # y
    opt.eval()
    topt.eval()
    assert normwise(p, tp.detach().numpy()) < TOL  # x
    assert normwise(opt.state[0]["z"], topt.state[tp]["z"].numpy()) < TOL
    ours, theirs = opt.param_groups[0], topt.param_groups[0]
    for key in ("k", "lr_max", "weight_sum", "scheduled_lr", "train_mode"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-12), key


@pytest.mark.parametrize(("name", "kw"), SF_CONFIGS, ids=SF_IDS)
def test_matches_schedulefree_reference_implementation(name, kw):
    torch = pytest.importorskip("torch")
    sf = pytest.importorskip("schedulefree")
    p0, grads = problem(500, np.float32, seed=4)
    p = p0.copy()
    opt = getattr(optim, name)([p], **kw)
    opt.train()
    tp = torch.from_numpy(p0.copy()).requires_grad_()
    topt = getattr(sf, name + "Reference")([tp], **kw)
    topt.train()
    for g in grads:
        opt.step([g])
        tp.grad = torch.from_numpy(g.copy())
        topt.step()
    assert normwise(p, tp.detach().numpy()) < TOL
    opt.eval()
    np.testing.assert_allclose(p, topt.state[tp]["x"].numpy(), rtol=0, atol=TOL * np.abs(p).max())
