// Checks of the list arguments of the multi-tensor bindings (optim_extra,
// muon_prodigy): Python lists of arrays plus `labels` (e.g. "['fc1.weight']"
// or "[3]"), so messages name the array as the user knows it. Every array of
// every list is checked before any memory is touched.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "buffers.hpp"

namespace slimgrad::bind {

inline std::vector<std::string> label_list(py::handle labels, std::size_t n) {
  std::vector<std::string> out;
  if (!labels.is_none()) {
    for (py::handle h : labels) out.push_back(py::str(h));
    if (out.size() != n)
      throw py::value_error("labels: expected " + std::to_string(n) + " labels, got " + std::to_string(out.size()));
  } else {
    for (std::size_t i = 0; i < n; ++i) out.push_back("[" + std::to_string(i) + "]");
  }
  return out;
}

inline py::list as_list(py::handle obj, const std::string& name) {
  if (!py::isinstance<py::list>(obj) && !py::isinstance<py::tuple>(obj))
    throw py::type_error(name + ": expected a list of arrays, got " + describe(obj));
  return py::list(py::reinterpret_borrow<py::object>(obj));
}

// as_list, and exactly n arrays (ValueError otherwise).
inline py::list as_list_of(py::handle obj, const std::string& what, std::size_t n) {
  const py::list l = as_list(obj, what);
  if (l.size() != n)
    throw py::value_error(what + ": expected " + std::to_string(n) + " arrays, got " + std::to_string(l.size()));
  return l;
}

// The first list fixes the dtype (one of `dtypes`); the rest match it.
inline std::vector<Array> check_first(py::handle obj, const std::string& what, const std::vector<std::string>& labels,
                               std::initializer_list<DType> dtypes, Access access) {
  const py::list l = as_list_of(obj, what, labels.size());
  std::vector<Array> out;
  for (std::size_t i = 0; i < l.size(); ++i) {
    if (i == 0)
      out.push_back(check_array(l[i], what + labels[i], dtypes, access));
    else
      out.push_back(check_array(l[i], what + labels[i], {out[0].dtype}, access));
  }
  return out;
}

inline std::vector<Array> check_list_like(py::handle obj, const std::string& what, const std::vector<std::string>& labels,
                                   const std::vector<Array>& like, Access access) {
  const py::list l = as_list_of(obj, what, like.size());
  std::vector<Array> out;
  for (std::size_t i = 0; i < l.size(); ++i) out.push_back(check_like(l[i], what + labels[i], like[i], access));
  return out;
}

// Same shape as like[i], fixed dtype (8-bit codes).
inline std::vector<Array> check_list_shaped(py::handle obj, const std::string& what, const std::vector<std::string>& labels,
                                     const std::vector<Array>& like, DType dtype, Access access) {
  const py::list l = as_list_of(obj, what, like.size());
  std::vector<Array> out;
  for (std::size_t i = 0; i < l.size(); ++i) {
    const auto shape = like[i].shape();
    out.push_back(check_array(l[i], what + labels[i], {dtype}, access, &shape));
  }
  return out;
}

template <class T>
inline std::vector<T*> ptrs(const std::vector<Array>& a) {
  std::vector<T*> out;
  for (const auto& x : a) out.push_back(x.template mut<T>());
  return out;
}
inline std::vector<std::size_t> sizes_of(const std::vector<Array>& a) {
  std::vector<std::size_t> out;
  for (const auto& x : a) out.push_back(x.size());
  return out;
}

inline void check_finite_scalar(const char* name, double v) {
  if (!std::isfinite(v)) throw py::value_error(std::string(name) + ": expected a finite number, got " + std::to_string(v));
}

}  // namespace slimgrad::bind
