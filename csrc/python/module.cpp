// flexcore._flexcore: NumPy front end of the libflexcore C ABI.
//
// Arrays are checked here (ndarray, native float32/float64, C-contiguous, matching shapes) so the
// C functions only ever see dense buffers; kernels run with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <array>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "flexcore/flexcore.h"

namespace py = pybind11;

namespace {

struct OpName {
    const char* name;
    int code;
};

// Op names are numpy's where numpy has one (maximum, arctan, log1p), short otherwise.
constexpr std::array<OpName, FC_UNARY_COUNT> kUnaryOps = {{
    {"neg", FC_UNARY_NEG},
    {"exp", FC_UNARY_EXP},
    {"log", FC_UNARY_LOG},
    {"log1p", FC_UNARY_LOG1P},
    {"sqrt", FC_UNARY_SQRT},
    {"abs", FC_UNARY_ABS},
    {"sigmoid", FC_UNARY_SIGMOID},
    {"tanh", FC_UNARY_TANH},
    {"arctan", FC_UNARY_ARCTAN},
    {"relu", FC_UNARY_RELU},
}};

constexpr std::array<OpName, FC_BINARY_COUNT> kBinaryOps = {{
    {"add", FC_BINARY_ADD},
    {"sub", FC_BINARY_SUB},
    {"mul", FC_BINARY_MUL},
    {"div", FC_BINARY_DIV},
    {"maximum", FC_BINARY_MAXIMUM},
    {"minimum", FC_BINARY_MINIMUM},
}};

template <std::size_t N>
py::tuple op_names(const std::array<OpName, N>& ops)
{
    py::tuple names(N);
    for (std::size_t i = 0; i < N; ++i) {
        names[i] = py::str(ops[i].name);
    }
    return names;
}

template <std::size_t N>
int op_code(const std::array<OpName, N>& ops, const std::string& name, const char* kind)
{
    std::string valid;
    for (const OpName& op : ops) {
        if (name == op.name) {
            return op.code;
        }
        valid += valid.empty() ? "" : ", ";
        valid += op.name;
    }
    throw py::value_error("unknown " + std::string(kind) + " op '" + name + "'; valid: " + valid);
}

void check_status(int status)
{
    if (status != FC_OK) {
        throw std::runtime_error(std::string("libflexcore: ") + fc_strerror(status));
    }
}

std::string describe_shape(const py::array& a)
{
    py::tuple shape(a.ndim());
    for (py::ssize_t i = 0; i < a.ndim(); ++i) {
        shape[static_cast<std::size_t>(i)] = a.shape(i);
    }
    return py::str(shape);
}

// `obj` as an array the kernels accept, or an exception naming the argument.
py::array checked_array(const py::handle& obj, const char* name)
{
    if (!py::isinstance<py::array>(obj)) {
        throw py::type_error(std::string("argument '") + name + "' must be a numpy.ndarray, not " +
                             py::str(py::type::handle_of(obj).attr("__name__")).cast<std::string>());
    }
    auto arr = py::reinterpret_borrow<py::array>(obj);
    // array_t's isinstance compares dtypes with PyArray_EquivTypes, so byte-swapped floats fail.
    if (!py::isinstance<py::array_t<float, 0>>(arr) && !py::isinstance<py::array_t<double, 0>>(arr)) {
        throw py::value_error(std::string("argument '") + name + "' has dtype " +
                              py::str(arr.dtype()).cast<std::string>() +
                              "; expected native float32 or float64");
    }
    if (!(arr.flags() & py::array::c_style)) {
        throw py::value_error(std::string("argument '") + name + "' must be C-contiguous");
    }
    return arr;
}

std::vector<py::ssize_t> shape_of(const py::array& a) { return {a.shape(), a.shape() + a.ndim()}; }

template <typename T>
struct Kernels;

template <>
struct Kernels<float> {
    static constexpr auto unary = fc_unary_f32;
    static constexpr auto binary = fc_binary_f32;
    static constexpr auto philox_uniform = fc_philox_uniform_f32;
};

template <>
struct Kernels<double> {
    static constexpr auto unary = fc_unary_f64;
    static constexpr auto binary = fc_binary_f64;
    static constexpr auto philox_uniform = fc_philox_uniform_f64;
};

template <typename T>
py::array unary_typed(int code, const py::array& x)
{
    py::array_t<T> y(shape_of(x));
    const T* xp = static_cast<const T*>(x.data());
    T* yp = y.mutable_data();
    const std::int64_t n = x.size();
    int status;
    {
        py::gil_scoped_release release;
        status = Kernels<T>::unary(code, xp, yp, n);
    }
    check_status(status);
    return y;
}

template <typename T>
py::array binary_typed(int code, const py::array& a, const py::array& b)
{
    py::array_t<T> y(shape_of(a));
    const T* ap = static_cast<const T*>(a.data());
    const T* bp = static_cast<const T*>(b.data());
    T* yp = y.mutable_data();
    const std::int64_t n = a.size();
    int status;
    {
        py::gil_scoped_release release;
        status = Kernels<T>::binary(code, ap, bp, yp, n);
    }
    check_status(status);
    return y;
}

template <typename T>
py::array philox_typed(std::uint64_t seed, std::uint64_t salt, std::int64_t offset, std::int64_t n)
{
    py::array_t<T> out(static_cast<py::ssize_t>(n));
    T* op = out.mutable_data();
    int status;
    {
        py::gil_scoped_release release;
        status = Kernels<T>::philox_uniform(seed, salt, offset, op, n);
    }
    check_status(status);
    return out;
}

py::array unary(const std::string& op, const py::handle& x_obj)
{
    const int code = op_code(kUnaryOps, op, "unary");
    const py::array x = checked_array(x_obj, "x");
    return x.itemsize() == 4 ? unary_typed<float>(code, x) : unary_typed<double>(code, x);
}

py::array binary(const std::string& op, const py::handle& a_obj, const py::handle& b_obj)
{
    const int code = op_code(kBinaryOps, op, "binary");
    const py::array a = checked_array(a_obj, "a");
    const py::array b = checked_array(b_obj, "b");
    if (a.itemsize() != b.itemsize()) {
        throw py::value_error("argument 'b' has dtype " + py::str(b.dtype()).cast<std::string>() +
                              " but 'a' has " + py::str(a.dtype()).cast<std::string>());
    }
    if (shape_of(a) != shape_of(b)) {
        throw py::value_error("argument 'b' has shape " + describe_shape(b) + " but 'a' has " +
                              describe_shape(a) + " (no broadcasting here)");
    }
    return a.itemsize() == 4 ? binary_typed<float>(code, a, b) : binary_typed<double>(code, a, b);
}

py::array philox_uniform(std::uint64_t seed, std::uint64_t salt, std::int64_t offset, std::int64_t n,
                         const py::object& dtype_obj)
{
    if (offset < 0 || n < 0 || n > std::numeric_limits<std::int64_t>::max() - offset) {
        throw py::value_error("need offset >= 0, n >= 0 and offset + n < 2**63; got offset=" +
                              std::to_string(offset) + ", n=" + std::to_string(n));
    }
    const py::dtype dtype = py::dtype::from_args(dtype_obj);
    if (dtype.equal(py::dtype::of<float>())) {
        return philox_typed<float>(seed, salt, offset, n);
    }
    if (dtype.equal(py::dtype::of<double>())) {
        return philox_typed<double>(seed, salt, offset, n);
    }
    throw py::value_error("argument 'dtype' is " + py::str(dtype).cast<std::string>() +
                          "; expected float32 or float64");
}

}  // namespace

PYBIND11_MODULE(_flexcore, m)
{
    m.doc() = "flexcore native kernels (libflexcore) for NumPy arrays.";
    m.attr("UNARY_OPS") = op_names(kUnaryOps);
    m.attr("BINARY_OPS") = op_names(kBinaryOps);
    m.def("version", &fc_version, "libflexcore version string.");
    m.def("cpu_isa", &fc_cpu_isa, "Instruction set the kernels dispatch to: avx512, avx2 or scalar.");
    m.def("unary", &unary, py::arg("op"), py::arg("x"),
          "op(x) elementwise; x a C-contiguous float32/float64 ndarray. Returns a new array.");
    m.def("binary", &binary, py::arg("op"), py::arg("a"), py::arg("b"),
          "op(a, b) elementwise; a and b C-contiguous, same shape and dtype. Returns a new array.");
    m.def("philox_uniform", &philox_uniform, py::arg("seed"), py::arg("salt"), py::arg("offset"),
          py::arg("n"), py::arg("dtype") = "float32",
          "Uniforms in [0, 1) for global indices offset..offset+n-1 of the Philox stream (seed, salt).");
}
