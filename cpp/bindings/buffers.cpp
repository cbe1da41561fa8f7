#include "buffers.hpp"

#include <algorithm>

namespace slimgrad::bind {
namespace {

std::string expected_str(std::initializer_list<DType> dtypes) {
  std::string s;
  std::size_t i = 0;
  for (DType d : dtypes) {
    if (i > 0) s += (i + 1 == dtypes.size()) ? " or " : ", ";
    s += dtype_name(d);
    ++i;
  }
  return s;
}

bool native_order(const py::dtype& dt) {
  const char bo = dt.byteorder();
  constexpr char native = (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__) ? '<' : '>';
  return bo == '=' || bo == '|' || bo == native;
}

}  // namespace

// ml_dtypes.bfloat16 is a user-defined NumPy type: its type number is only
// known at run time. Looked up once, when the first non-builtin dtype is seen.
int bfloat16_num() {
  static const int num = [] {
    try {
      return py::dtype::from_args(py::module_::import("ml_dtypes").attr("bfloat16")).num();
    } catch (const py::error_already_set&) {
      return -1;
    }
  }();
  return num;
}

const char* dtype_name(DType d) {
  switch (d) {
    case DType::f32: return "float32";
    case DType::f64: return "float64";
    case DType::f16: return "float16";
    case DType::bf16: return "bfloat16";
    case DType::i8: return "int8";
    case DType::u8: return "uint8";
    case DType::i16: return "int16";
    case DType::u16: return "uint16";
    case DType::i32: return "int32";
    case DType::u32: return "uint32";
    case DType::i64: return "int64";
    case DType::u64: return "uint64";
    case DType::boolean: return "bool";
    case DType::other: break;
  }
  return "other";
}

DType dtype_of(const py::dtype& dt) {
  const char kind = dt.kind();
  const auto size = dt.itemsize();
  switch (kind) {
    case 'f': return size == 4 ? DType::f32 : size == 8 ? DType::f64 : size == 2 ? DType::f16 : DType::other;
    case 'i':
      return size == 1 ? DType::i8 : size == 2 ? DType::i16 : size == 4 ? DType::i32 : size == 8 ? DType::i64 : DType::other;
    case 'u':
      return size == 1 ? DType::u8 : size == 2 ? DType::u16 : size == 4 ? DType::u32 : size == 8 ? DType::u64 : DType::other;
    case 'b': return DType::boolean;
    default: break;
  }
  if (dt.num() >= 256 && size == 2 && dt.num() == bfloat16_num()) return DType::bf16;
  return DType::other;
}

std::string shape_str(const std::vector<py::ssize_t>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + (shape.size() == 1 ? ",)" : ")");
}

std::string describe(py::handle obj) {
  if (!py::isinstance<py::array>(obj)) return std::string(py::str(py::type::handle_of(obj).attr("__name__")));
  const auto arr = py::reinterpret_borrow<py::array>(obj);
  std::string s;
  if (!native_order(arr.dtype())) s += "non-native byte order ";
  if (!(arr.flags() & py::array::c_style)) s += "non-contiguous ";
  s += std::string(py::str(arr.dtype().attr("name")));
  return s + " array of shape " + shape_str({arr.shape(), arr.shape() + arr.ndim()});
}

Array check_array(py::handle obj, const std::string& name, std::initializer_list<DType> dtypes,
                  Access access, const std::vector<py::ssize_t>* shape) {
  auto expected = [&] {
    std::string s = expected_str(dtypes) + " C-contiguous array";
    if (shape) s += " of shape " + shape_str(*shape);
    return s;
  };
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(name + ": expected " + expected() + ", got " + describe(obj));
  Array a{py::reinterpret_borrow<py::array>(obj), name, DType::other};
  const py::dtype dt = a.arr.dtype();
  a.dtype = dtype_of(dt);
  bool dtype_ok = false;
  for (DType d : dtypes) dtype_ok = dtype_ok || d == a.dtype;
  if (!dtype_ok || !native_order(dt) || !(a.arr.flags() & py::array::c_style))
    throw py::type_error(name + ": expected " + expected() + ", got " + describe(obj));
  // (compared in place: a.shape() would allocate a vector on every call)
  if (shape && !std::equal(shape->begin(), shape->end(), a.arr.shape(), a.arr.shape() + a.arr.ndim()))
    throw py::value_error(name + ": expected " + expected() + ", got " + describe(obj));
  const auto itemsize = static_cast<std::uintptr_t>(dt.itemsize());
  const auto addr = reinterpret_cast<std::uintptr_t>(a.arr.data());
  if (a.arr.size() > 0 && itemsize > 1 && addr % itemsize != 0)
    throw py::value_error(name + ": expected an array aligned to its " + std::to_string(itemsize) +
                          "-byte elements, got a misaligned " + describe(obj) + " (at address " +
                          std::to_string(addr % itemsize) + " mod " + std::to_string(itemsize) +
                          "; .copy() gives an aligned array)");
  if (access == Access::write && !a.arr.writeable())
    throw py::value_error(name + ": expected a writable array, got a read-only " + describe(obj));
  return a;
}

Array check_like(py::handle obj, const std::string& name, const Array& like, Access access) {
  const auto shape = like.shape();
  return check_array(obj, name, {like.dtype}, access, &shape);
}

namespace {
struct Span {
  std::uintptr_t begin, end;
};
Span span(const Array& a) {
  const auto b = reinterpret_cast<std::uintptr_t>(a.arr.data());
  return {b, b + static_cast<std::uintptr_t>(a.arr.nbytes())};
}
bool overlap(Span a, Span b) { return a.begin < a.end && b.begin < b.end && a.begin < b.end && b.begin < a.end; }
}  // namespace

void check_size(const Array& a, std::size_t n) {
  if (a.size() != n)
    throw py::value_error(a.name + ": expected " + std::to_string(n) + " elements, got " + describe(a.arr));
}

std::size_t whole_blocks(const Array& a, std::size_t block) {
  if (a.size() % block != 0)
    throw py::value_error(a.name + ": expected a multiple of " + std::to_string(block) + " elements, got " +
                          describe(a.arr));
  return a.size() / block;
}

void check_disjoint(const Array& out, std::initializer_list<const Array*> inputs) {
  for (const Array* in : inputs)
    if (overlap(span(out), span(*in)))
      throw py::value_error(out.name + ": must not share memory with " + in->name +
                            " (this kernel does not support overlapping arrays), got an overlapping array");
}

void check_same_or_disjoint(const Array& out, std::initializer_list<const Array*> inputs) {
  for (const Array* in : inputs) {
    const Span o = span(out), i = span(*in);
    if (overlap(o, i) && !(o.begin == i.begin && o.end == i.end))
      throw py::value_error(out.name + ": expected either the same array as " + in->name +
                            " (in place) or memory not shared with it, got a partly overlapping array");
  }
}

void check_no_overlap(std::vector<ByteRange> ranges, const std::function<std::string(std::size_t)>& name) {
  std::vector<ByteRange> written, read;
  for (const ByteRange& r : ranges)
    if (r.begin < r.end) (r.written ? written : read).push_back(r);
  const auto fail = [&](const ByteRange& a, const ByteRange& b) {
    const bool a_first = a.id < b.id;
    throw py::value_error(name(a_first ? a.id : b.id) + " and " + name(a_first ? b.id : a.id) +
                          ": expected separate buffers (the step writes one while reading the other), "
                          "got arrays that overlap in memory");
  };
  std::sort(written.begin(), written.end(), [](const ByteRange& a, const ByteRange& b) { return a.begin < b.begin; });
  for (std::size_t k = 1; k < written.size(); ++k)
    if (written[k].begin < written[k - 1].end) fail(written[k - 1], written[k]);
  // Disjoint and sorted by start, so sorted by end too: the first written
  // range ending after r begins is the only candidate.
  for (const ByteRange& r : read) {
    const auto it = std::upper_bound(written.begin(), written.end(), r.begin,
                                     [](std::uintptr_t x, const ByteRange& w) { return x < w.end; });
    if (it != written.end() && it->begin < r.end) fail(*it, r);
  }
}

void check_no_overlap(std::initializer_list<const std::vector<Array>*> written,
                      std::initializer_list<const std::vector<Array>*> read) {
  std::vector<ByteRange> ranges;
  std::vector<const Array*> by_id;
  for (bool w : {true, false})
    for (const std::vector<Array>* list : w ? written : read)
      for (const Array& a : *list) {
        const auto b = reinterpret_cast<std::uintptr_t>(a.arr.data());
        ranges.push_back({b, b + static_cast<std::uintptr_t>(a.arr.nbytes()), w, by_id.size()});
        by_id.push_back(&a);
      }
  check_no_overlap(std::move(ranges), [&](std::size_t id) { return by_id[id]->name; });
}

}  // namespace slimgrad::bind
