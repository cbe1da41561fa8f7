// The buffer contract (docs/architecture.md, "The buffer contract"), implemented once for every binding.
//
// Arguments arrive as plain Python objects and are checked here rather than by
// pybind11's array_t caster: the caster either copies silently (without
// noconvert) or fails with a generic "incompatible function arguments" that
// names neither the argument nor what was wrong. check_array() never copies:
// it accepts exactly a native-endian, C-contiguous ndarray of an allowed dtype
// (a TypeError otherwise), then checks shape and writability (ValueError).
// Messages name the argument, what was expected and what was given, e.g.
//   grads['fc1.weight']: expected float32 C-contiguous array of shape (512, 64), got float64 array of shape (512, 64)
// Callers check every argument before touching any memory, so a bad argument
// leaves every array unchanged.
//
// Alignment: an array whose data pointer is not a multiple of its itemsize
// (possible with np.frombuffer at an odd offset, or a view of a byte buffer)
// is refused with ValueError: the kernels dereference float* / int32_t*
// directly, which is undefined behaviour there. NumPy's own allocations are
// always aligned, so only such hand-made views are affected; `.copy()` fixes
// them.
//
// Overlap: check_disjoint() refuses an output that shares any byte with an
// input (ValueError), for the kernels whose result would depend on the order
// in which elements are read and written (ISA, threads). Kernels that work
// element by element in place (`x` is both input and output) take the same
// array for both and are documented as such.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

namespace slimgrad::bind {

namespace py = pybind11;

enum class DType { f32, f64, f16, bf16, i8, u8, i16, u16, i32, u32, i64, u64, boolean, other };

const char* dtype_name(DType d);
// NumPy's type number of ml_dtypes.bfloat16 (-1 if ml_dtypes is missing).
int bfloat16_num();
DType dtype_of(const py::dtype& dt);
template <class T> constexpr DType dtype_for();
template <> constexpr DType dtype_for<float>() { return DType::f32; }
template <> constexpr DType dtype_for<double>() { return DType::f64; }
template <> constexpr DType dtype_for<std::int8_t>() { return DType::i8; }
template <> constexpr DType dtype_for<std::uint8_t>() { return DType::u8; }
template <> constexpr DType dtype_for<std::int32_t>() { return DType::i32; }
template <> constexpr DType dtype_for<std::int64_t>() { return DType::i64; }
template <> constexpr DType dtype_for<bool>() { return DType::boolean; }

enum class Access { read, write };

// A checked ndarray argument. Holds a reference to the array, so its memory
// stays valid while the GIL is released.
struct Array {
  py::array arr;
  std::string name;
  DType dtype = DType::other;

  std::size_t size() const { return static_cast<std::size_t>(arr.size()); }
  py::ssize_t ndim() const { return arr.ndim(); }
  py::ssize_t dim(py::ssize_t i) const { return arr.shape(i); }
  std::vector<py::ssize_t> shape() const { return {arr.shape(), arr.shape() + arr.ndim()}; }
  // Raw pointers. The caller asked for Access::write if it writes.
  template <class T> T* mut() const { return static_cast<T*>(const_cast<void*>(arr.data())); }
  template <class T> const T* ptr() const { return static_cast<const T*>(arr.data()); }
};

// Checks obj against the contract. `shape` (if not null) must match exactly.
Array check_array(py::handle obj, const std::string& name, std::initializer_list<DType> dtypes,
                  Access access, const std::vector<py::ssize_t>* shape = nullptr);
// Same dtype and shape as `like` (e.g. a gradient for its parameter).
Array check_like(py::handle obj, const std::string& name, const Array& like, Access access);
// ValueError naming `a` unless it holds exactly n elements.
void check_size(const Array& a, std::size_t n);
// The number of blocks of `block` elements in `a`; ValueError naming `a`
// unless its size is a multiple of `block` (whole GGUF / K-quant blocks).
std::size_t whole_blocks(const Array& a, std::size_t block);

// Refuses (ValueError) `out` sharing memory with any of `inputs` (byte-range
// check, as np.shares_memory's bounds test: conservative for strided views).
void check_disjoint(const Array& out, std::initializer_list<const Array*> inputs);
// For element-wise kernels (element i of `out` depends only on element i of
// each input): `out` may be exactly an input (same memory, same size: in
// place), but not partly overlap one (ValueError).
void check_same_or_disjoint(const Array& out, std::initializer_list<const Array*> inputs);
// Optimizer steps (issue 17): the byte range of each buffer of a call,
// written or only read. check_no_overlap refuses (ValueError naming both,
// name(id) gives an argument's name) any two written ranges that share a
// byte, and any read range sharing a byte with a written one; read ranges
// may share memory (one gradient for two params). O(n log n).
struct ByteRange {
  std::uintptr_t begin, end;
  bool written;
  std::size_t id;
};
void check_no_overlap(std::vector<ByteRange> ranges, const std::function<std::string(std::size_t)>& name);
// The ranges of lists of checked arrays (id: position in the concatenation),
// then the check, naming the arrays by Array::name.
void check_no_overlap(std::initializer_list<const std::vector<Array>*> written,
                      std::initializer_list<const std::vector<Array>*> read);
// a * b <= limit, without overflow.
inline bool checked_mul(std::size_t a, std::size_t b, std::size_t limit) {
  return a == 0 || b <= limit / a;
}

// A register_<area>() made of several bind_<group>() functions, or the module
// made of several register_<area>(): each binder runs on m, in the order given.
using Binder = void (*)(py::module_&);
inline void bind_all(py::module_ m, std::initializer_list<Binder> binders) {
  for (const Binder bind : binders) bind(m);
}

std::string shape_str(const std::vector<py::ssize_t>& shape);
// "float64 array of shape (3, 4)", "big-endian float32 ...", "list", ...
std::string describe(py::handle obj);

}  // namespace slimgrad::bind
