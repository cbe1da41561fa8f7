// C++ microbenchmarks of the core kernels, per ISA and size, reporting bytes
// processed (so Google Benchmark prints GB/s). Build with
//   cmake -S . -B build/bench -DSLIMGRAD_BUILD_BENCH=ON && cmake --build build/bench
// Other areas add their own bench_<area>.cpp next to this file.
#include <benchmark/benchmark.h>

#include <vector>

#include "slimgrad/core.hpp"
#include "slimgrad/isa.hpp"

namespace {

using slimgrad::Isa;

// Registers fn for every ISA this CPU supports, at sizes from L1 to DRAM.
template <class Fn>
void register_per_isa(const char* name, Fn fn) {
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512}) {
    if (!slimgrad::isa_supported(isa)) continue;
    auto* b = benchmark::RegisterBenchmark(
        (std::string(name) + "/" + slimgrad::isa_name(isa)).c_str(),
        [fn, isa](benchmark::State& state) {
          slimgrad::set_active_isa(isa);
          fn(state);
        });
    b->RangeMultiplier(16)->Range(1 << 10, 1 << 24)->UseRealTime();
  }
}

void axpy(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::vector<float> y(n, 1.0f), x(n, 0.5f);
  for (auto _ : state) {
    slimgrad::axpy(y.data(), x.data(), 1e-3f, n);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n * 3 * sizeof(float)));
}

void squared_norm(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::vector<float> x(n, 0.5f);
  for (auto _ : state) benchmark::DoNotOptimize(slimgrad::squared_norm(x.data(), n));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n * sizeof(float)));
}

void stream_probe(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  std::vector<float> p(n, 1.0f), g(n, 0.0f), m(n, 0.0f), v(n, 0.0f);
  for (auto _ : state) {
    slimgrad::stream_probe(p.data(), g.data(), m.data(), v.data(), n);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n * 7 * sizeof(float)));
}

const bool registered = [] {
  register_per_isa("axpy_f32", axpy);
  register_per_isa("squared_norm_f32", squared_norm);
  register_per_isa("stream_probe_f32", stream_probe);
  return true;
}();

}  // namespace
