// Multi-tensor, threaded, dispatched optimizer steps (see optim.hpp).
#include "slimgrad/optim.hpp"

#include <algorithm>
#include <vector>

#include "slimgrad/core.hpp"
#include "slimgrad/threading.hpp"
#include "kernels_optim_rules.hpp"

namespace slimgrad {

void step_constants(StepArgs& a) {
  // The defaults, then the row's own constants (kernels_optim_rules.hpp).
  a.wd_scale = 1.0 - a.lr * a.weight_decay;
  a.flag = false;
  a.decay = a.beta2;
  a.w = 1.0 - a.beta1;
  a.prologue_wd = true;
  kernels::dispatch_rule(a.algo, [&a](auto row) { kernels::Rule<decltype(row)::value>::constants(a); });
}

int state_slots(const StepArgs& a, int out[3]) {
  int n = 0;
  const OptimDesc& d = describe(a.algo);
  for (int k = 0; k < 3; ++k) {
    bool use = false;
    switch (d.slots[k].when) {
      case SlotWhen::always: use = true; break;
      case SlotWhen::momentum: use = a.momentum != 0; break;
      case SlotWhen::centered: use = a.centered; break;
      case SlotWhen::amsgrad: use = a.amsgrad; break;
      default: break;  // never; factored/vector belong to multipass rows
    }
    if (use) out[n++] = k;
  }
  return n;
}

namespace {

std::size_t elem_size(Storage st) { return st == Storage::f64 ? 8 : st == Storage::f32 ? 4 : 2; }

bool follows(const void* a, std::size_t bytes, const void* b) {
  if (a == nullptr || b == nullptr) return a == b;
  return static_cast<const char*>(a) + bytes == static_cast<const char*>(b);
}

// Arrays that lie back to back in every stream (the flatten() arena) become
// one range, so a model in an arena is stepped as one array.
std::vector<Slot> merge_contiguous(const StepArgs& a, const Slot* slots, std::size_t count) {
  std::vector<Slot> out;
  const std::size_t es = elem_size(a.storage);
  const std::size_t ms = 4;  // float32 master element
  const std::size_t ss = a.storage == Storage::f64 ? 8 : a.bf16_state ? 2 : 4;  // state element
  for (std::size_t i = 0; i < count; ++i) {
    const Slot& s = slots[i];
    if (!out.empty()) {
      Slot& l = out.back();
      bool ok = follows(l.p, l.n * es, s.p) && follows(l.g, l.n * es, s.g) &&
                follows(l.master, l.n * ms, s.master) && l.offset + l.n == s.offset;
      for (int k = 0; k < 3 && ok; ++k) ok = follows(l.s[k], l.n * ss, s.s[k]);
      if (ok) {
        l.n += s.n;
        continue;
      }
    }
    out.push_back(s);
  }
  return out;
}

// Index of the first non-finite element of x[0, n), or n.
template <Isa I>
std::size_t first_nonfinite(Storage st, const void* x, std::size_t n) {
  switch (st) {
    case Storage::f32: return kernels::find_nonfinite<I, float>(static_cast<const float*>(x), n);
    case Storage::f64: return kernels::find_nonfinite<I, double>(static_cast<const double*>(x), n);
    default: break;
  }
  return kernels::find_nonfinite_half<I>(static_cast<const std::uint16_t*>(x), n, st == Storage::bf16);
}

// Scans all arrays in parallel; the first bad element in list order.
bool scan(Storage st, const void* const* arrays, const std::size_t* sizes, std::size_t count,
          std::size_t* bad_array, std::size_t* bad_index) {
  const WorkPlan plan = plan_work(sizes, count);
  std::vector<std::size_t> found(plan.pieces.size(), SIZE_MAX);
  const std::size_t es = elem_size(st);
  dispatch([&](auto isa) {
    run_plan(plan, [&](std::size_t k, const Piece& it) {
      const auto* base = static_cast<const char*>(arrays[it.array]) + it.begin * es;
      const std::size_t j = first_nonfinite<decltype(isa)::value>(st, base, it.end - it.begin);
      if (j < it.end - it.begin) found[k] = it.begin + j;
    });
  });
  for (std::size_t k = 0; k < plan.pieces.size(); ++k)
    if (found[k] != SIZE_MAX) {
      *bad_array = plan.pieces[k].array;
      *bad_index = found[k];
      return true;
    }
  return false;
}

}  // namespace

bool find_nonfinite_multi(Storage st, const void* const* arrays, const std::size_t* sizes,
                          std::size_t count, std::size_t* bad_array, std::size_t* bad_index) {
  return scan(st, arrays, sizes, count, bad_array, bad_index);
}

bool optim_step(const StepArgs& args, const Slot* slots, std::size_t count, bool check,
                std::size_t* bad_slot, std::size_t* bad_index) {
  const std::vector<Slot> merged = merge_contiguous(args, slots, count);
  std::vector<std::size_t> sizes(merged.size());
  for (std::size_t i = 0; i < merged.size(); ++i) sizes[i] = merged[i].n;
  const WorkPlan plan = plan_work(sizes.data(), sizes.size());
  const auto update = [&](auto isa, std::size_t t) {
    for (std::size_t k = plan.task_begin[t]; k < plan.task_begin[t + 1]; ++k) {
      const Piece& it = plan.pieces[k];
      kernels::optim_step<decltype(isa)::value>(args, merged[it.array], it.begin, it.end);
    }
  };
  if (!check) {
    dispatch([&](auto isa) { run_tasks(plan.tasks(), plan.total, [&](std::size_t t) { update(isa, t); }); });
    return true;
  }
  // The scan of every gradient (unmerged: indices are the caller's), then the
  // update; the first bad element in list order wins.
  std::vector<const void*> gs(count);
  std::vector<std::size_t> ns(count);
  for (std::size_t i = 0; i < count; ++i) {
    gs[i] = slots[i].g;
    ns[i] = slots[i].n;
  }
  const WorkPlan splan = plan_work(ns.data(), count);
  std::vector<std::size_t> found(splan.pieces.size(), SIZE_MAX);
  const std::size_t es = elem_size(args.storage);
  const auto scan_task = [&](auto isa, std::size_t t) {
    for (std::size_t k = splan.task_begin[t]; k < splan.task_begin[t + 1]; ++k) {
      const Piece& it = splan.pieces[k];
      const auto* base = static_cast<const char*>(gs[it.array]) + it.begin * es;
      const std::size_t j = first_nonfinite<decltype(isa)::value>(args.storage, base, it.end - it.begin);
      if (j < it.end - it.begin) found[k] = it.begin + j;
    }
  };
  const auto all_finite = [&]() {
    for (std::size_t v : found)
      if (v != SIZE_MAX) return false;
    return true;
  };
  // One parallel region, no barrier between the passes (parallel_phases):
  // each thread takes scan tasks while there are any, waits only for scan
  // tasks other threads have started (a thread the OS has not scheduled yet
  // holds none), then takes update tasks once every gradient is known
  // finite. On a busy machine this saves a wake-up of every thread per pass.
  bool ok = true;
  dispatch([&](auto isa) {
    ok = parallel_phases(
        plan.total >= 2 * kGrain, splan.tasks(), [&](std::size_t t) { scan_task(isa, t); }, plan.tasks(),
        [&](std::size_t t) { update(isa, t); }, all_finite);
  });
  if (!ok)  // the first bad element in list order
    for (std::size_t k = 0; k < found.size(); ++k)
      if (found[k] != SIZE_MAX) {
        *bad_slot = splan.pieces[k].array;
        *bad_index = found[k];
        break;
      }
  return ok;
}

}  // namespace slimgrad
