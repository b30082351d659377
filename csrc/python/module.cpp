// flexcore._flexcore: NumPy front end of the libflexcore C ABI.
//
// Arrays are checked here (ndarray, native float32/float64, C-contiguous, matching shapes) so the
// C functions only ever see dense buffers; kernels run with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "flexcore/flexcore.h"
#include "flexcore/executor.h"

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
    {"sign", FC_UNARY_SIGN},
    {"step", FC_UNARY_STEP},
}};

constexpr std::array<OpName, FC_BINARY_COUNT> kBinaryOps = {{
    {"add", FC_BINARY_ADD},
    {"sub", FC_BINARY_SUB},
    {"mul", FC_BINARY_MUL},
    {"div", FC_BINARY_DIV},
    {"maximum", FC_BINARY_MAXIMUM},
    {"minimum", FC_BINARY_MINIMUM},
    {"pow", FC_BINARY_POW},
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

// ---------------------------------------------------------------- executor (flexcore/executor.h)
namespace {

constexpr int kNpyAligned = 0x0100;  // numpy's NPY_ARRAY_ALIGNED: stable ABI flag values
constexpr int kNpyWriteable = 0x0400;

// What an array argument of a program must be: dtype (kind + size), shape, and its byte size.
struct ArraySpec {
    py::dtype dtype;
    char kind;
    py::ssize_t itemsize;
    std::vector<py::ssize_t> shape;
    std::int64_t nbytes;
};

ArraySpec array_spec(const py::handle& spec)
{
    // spec: (dtype, shape)
    auto t = spec.cast<py::tuple>();
    if (t.size() != 2) {
        throw py::value_error("an array spec is a (dtype, shape) pair");
    }
    ArraySpec s{py::dtype::from_args(t[0]), 0, 0, {}, 0};
    s.kind = s.dtype.kind();
    s.itemsize = s.dtype.itemsize();
    std::int64_t n = 1;
    for (const auto& d : t[1].cast<py::tuple>()) {
        const auto v = d.cast<py::ssize_t>();
        if (v < 0) {
            throw py::value_error("an array spec has a negative dimension");
        }
        s.shape.push_back(v);
        n *= v;
    }
    s.nbytes = n * s.itemsize;
    return s;
}

std::vector<ArraySpec> array_specs(const py::handle& specs)
{
    std::vector<ArraySpec> out;
    for (const auto& s : specs) {
        out.push_back(array_spec(s));
    }
    return out;
}

// The pybind11 face of an fc_program. `run` checks every array against its spec, then releases the
// GIL for the whole run; the GIL is taken back only inside CALLBACK instructions, which call the
// Python `callback(index, arrays)` with numpy views of the instruction's operands (inputs read-only;
// the views are valid only during the call).
class Program {
public:
    Program(const py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>& buffers,
            const py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>& code,
            const py::array_t<double, py::array::c_style | py::array::forcecast>& fimm, const py::list& consts,
            const py::list& inputs, const py::list& params, const py::list& outputs, const py::list& callbacks)
        : prog_(nullptr, &fc_program_destroy), inputs_(array_specs(inputs)), params_(array_specs(params)),
          outputs_(array_specs(outputs)),
          view_base_(py::capsule(this, [](void*) {}))
    {
        std::vector<const void*> const_ptrs;
        for (const auto& c : consts) {
            auto arr = py::reinterpret_borrow<py::array>(c);
            if (!py::isinstance<py::array>(c) || !(arr.flags() & py::array::c_style)) {
                throw py::value_error("program constants must be C-contiguous numpy arrays");
            }
            consts_.push_back(arr);  // kept alive as long as the program
            const_ptrs.push_back(arr.data());
        }
        for (const auto& cb : callbacks) {
            // (number of inputs, [(dtype, shape) of each operand])
            auto t = cb.cast<py::tuple>();
            callbacks_.push_back({t[0].cast<std::size_t>(), array_specs(t[1])});
        }
        if (buffers.ndim() != 2 || buffers.shape(1) != FC_BUFFER_FIELDS || code.ndim() != 1 || fimm.ndim() != 1) {
            throw py::value_error("program: buffers must be (n, 4) int64, code and fimm 1-d");
        }
        fc_program* prog = nullptr;
        const int status = fc_program_create(buffers.data(), buffers.shape(0), const_ptrs.data(),
                                             static_cast<std::int64_t>(const_ptrs.size()),
                                             static_cast<std::int64_t>(inputs_.size()),
                                             static_cast<std::int64_t>(params_.size()),
                                             static_cast<std::int64_t>(outputs_.size()), code.data(), code.size(),
                                             fimm.data(), fimm.size(), &prog);
        check_status(status);
        prog_.reset(prog);
        check_callbacks(code);
    }

    Program(const Program&) = delete;
    Program& operator=(const Program&) = delete;

    std::int64_t arena_bytes() const
    {
        std::int64_t n = 0;
        fc_program_arena_bytes(prog_.get(), &n);
        return n;
    }

    std::int64_t failed_instruction() const
    {
        std::int64_t i = -1;
        fc_program_failed_instruction(prog_.get(), &i);
        return i;
    }

    void set_profiling(bool on)
    {
        check_status(fc_program_set_profiling(prog_.get(), on ? 1 : 0));
    }

    // (seconds per instruction since profiling was switched on, number of profiled runs)
    py::tuple profile()
    {
        std::int64_t n = 0, runs = 0;
        fc_program_instruction_count(prog_.get(), &n);
        py::array_t<double> secs(static_cast<py::ssize_t>(n));
        check_status(fc_program_profile(prog_.get(), secs.mutable_data(), n, &runs));
        return py::make_tuple(secs, runs);
    }

    void run(const py::list& inputs, const py::list& params, const py::list& outputs, const py::object& callback)
    {
        if (owner_.load() == std::this_thread::get_id()) {
            throw std::runtime_error("program: run() re-entered from its own callback");
        }
        // `keep` holds a reference to every array for the run: the caller's lists may change while
        // the GIL is released.
        std::vector<py::array> keep;
        std::vector<void*> in = pointers(inputs, inputs_, "input", false, keep);
        std::vector<void*> par = pointers(params, params_, "parameter", false, keep);
        std::vector<void*> out = pointers(outputs, outputs_, "output", true, keep);
        Call call{this, callback, nullptr};
        int status;
        {
            py::gil_scoped_release release;
            // Taken without the GIL: a thread waiting here must not block a callback of the run in
            // progress, which needs the GIL. Runs of one program are serialised (it owns one arena).
            std::lock_guard<std::mutex> lock(mutex_);
            owner_.store(std::this_thread::get_id());
            status = fc_program_run(prog_.get(), in.data(), par.data(), out.data(), &Program::trampoline, &call);
            owner_.store(std::thread::id());
        }
        if (call.error) {
            std::rethrow_exception(call.error);
        }
        if (status != FC_OK) {
            throw std::runtime_error(std::string("libflexcore executor: ") + fc_strerror(status) + " (instruction " +
                                     std::to_string(failed_instruction()) + ")");
        }
    }

private:
    struct CallbackSpec {
        std::size_t n_in;
        std::vector<ArraySpec> operands;
    };
    struct Call {
        Program* self;
        const py::object& callback;
        std::exception_ptr error;
    };

    // Every CALLBACK instruction names a callback spec whose operand sizes are the instruction's (the
    // code is well formed: fc_program_create accepted it).
    void check_callbacks(const py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>& code) const
    {
        const std::int64_t* c = code.data();
        const std::int64_t len = code.size();
        for (std::int64_t pos = 0; pos < len;) {
            const std::int64_t n_in = c[pos + 1], n_out = c[pos + 2], n_int = c[pos + 3];
            if (c[pos] == FC_OPC_CALLBACK) {
                const std::int64_t* imm = c + pos + FC_INSTR_HEADER + n_in + n_out;
                const auto index = static_cast<std::size_t>(imm[0]);
                if (index >= callbacks_.size() || callbacks_[index].n_in != static_cast<std::size_t>(n_in) ||
                    callbacks_[index].operands.size() != static_cast<std::size_t>(n_in + n_out)) {
                    throw py::value_error("program: a callback instruction does not match its callback spec");
                }
                for (std::int64_t k = 0; k < n_in + n_out; ++k) {
                    if (callbacks_[index].operands[static_cast<std::size_t>(k)].nbytes != imm[1 + k]) {
                        throw py::value_error("program: a callback operand's size does not match its spec");
                    }
                }
            }
            pos += FC_INSTR_HEADER + n_in + n_out + n_int;
        }
    }

    static std::vector<void*> pointers(const py::list& arrays, const std::vector<ArraySpec>& specs, const char* what,
                                       bool written, std::vector<py::array>& keep)
    {
        if (arrays.size() != specs.size()) {
            throw py::value_error(std::string("program: expected ") + std::to_string(specs.size()) + " " + what +
                                  " array(s), got " + std::to_string(arrays.size()));
        }
        std::vector<void*> ptrs(specs.size());
        for (std::size_t i = 0; i < specs.size(); ++i) {
            const py::handle h = arrays[i];
            if (!py::isinstance<py::array>(h)) {
                throw py::type_error(std::string("program: ") + what + " #" + std::to_string(i) + " is not an ndarray");
            }
            auto arr = py::reinterpret_borrow<py::array>(h);
            const ArraySpec& s = specs[i];
            const py::dtype dt = arr.dtype();
            const int flags = arr.flags();
            if (dt.kind() != s.kind || dt.itemsize() != s.itemsize || dt.byteorder() == '>' ||
                !(flags & py::array::c_style) || !(flags & kNpyAligned) || (written && !(flags & kNpyWriteable)) ||
                arr.ndim() != static_cast<py::ssize_t>(s.shape.size()) ||
                !std::equal(s.shape.begin(), s.shape.end(), arr.shape())) {
                throw py::value_error(std::string("program: ") + what + " #" + std::to_string(i) + " must be an aligned " +
                                      (written ? "writeable " : "") + "C-contiguous " +
                                      py::str(s.dtype).cast<std::string>() + " array of the planned shape");
            }
            // Inputs and parameters are only read (the executor never writes them), so read-only
            // arrays are fine there.
            ptrs[i] = written ? arr.mutable_data() : const_cast<void*>(arr.data());
            keep.push_back(std::move(arr));
        }
        return ptrs;
    }

    static int trampoline(void* user, std::int64_t index, void* const* buffers) noexcept
    {
        auto* call = static_cast<Call*>(user);
        py::gil_scoped_acquire gil;
        try {
            const CallbackSpec& cb = call->self->callbacks_[static_cast<std::size_t>(index)];
            py::list views(cb.operands.size());
            for (std::size_t k = 0; k < cb.operands.size(); ++k) {
                const ArraySpec& s = cb.operands[k];
                py::array v(s.dtype, s.shape, {}, buffers[k], call->self->view_base_);
                if (k < cb.n_in) {
                    py::detail::array_proxy(v.ptr())->flags &= ~kNpyWriteable;
                }
                views[k] = v;
            }
            call->callback(index, views);
            return 0;
        } catch (...) {
            call->error = std::current_exception();
            return 1;
        }
    }

    std::unique_ptr<fc_program, int (*)(fc_program*)> prog_;
    std::vector<ArraySpec> inputs_, params_, outputs_;
    std::vector<CallbackSpec> callbacks_;
    std::vector<py::array> consts_;
    py::object view_base_;  // base object of the operand views: they do not own their memory
    std::mutex mutex_;
    std::atomic<std::thread::id> owner_{};  // the thread running the program, if any
};

void bind_executor(py::module_& m)
{
    py::class_<Program>(m, "Program",
                        "A validated executor program (flexcore/executor.h): buffers, instructions, constants.")
        .def(py::init<const py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>&,
                      const py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>&,
                      const py::array_t<double, py::array::c_style | py::array::forcecast>&, const py::list&,
                      const py::list&, const py::list&, const py::list&, const py::list&>(),
             py::arg("buffers"), py::arg("code"), py::arg("fimm"), py::arg("consts"), py::arg("inputs"),
             py::arg("params"), py::arg("outputs"), py::arg("callbacks"),
             "buffers (n, 4) int64; code and fimm flat; consts kept alive by the program; inputs, params, "
             "outputs: (dtype, shape) specs; callbacks: (n_inputs, [(dtype, shape), ...]) per callback index.")
        .def("run", &Program::run, py::arg("inputs"), py::arg("params"), py::arg("outputs"), py::arg("callback"),
             "Run the program once with the GIL released; outputs are written in place.")
        .def_property_readonly("arena_bytes", &Program::arena_bytes)
        .def("set_profiling", &Program::set_profiling, py::arg("on"),
             "Switch per-instruction timing on (clearing the totals) or off.")
        .def("profile", &Program::profile,
             "(seconds per instruction since profiling was switched on, number of profiled runs).")
        .def_property_readonly("failed_instruction", &Program::failed_instruction,
                               "Index of the instruction the last run failed at (-1: none).");
}

}  // namespace

// ---------------------------------------------------------------- GEMM (flexcore/gemm.h)
namespace {

constexpr std::array<OpName, FC_ACT_COUNT> kGemmActs = {{
    {"none", FC_ACT_NONE},
    {"relu", FC_ACT_RELU},
    {"sigmoid", FC_ACT_SIGMOID},
    {"tanh", FC_ACT_TANH},
}};

// A 2-D operand as the C GEMM takes it: data pointer and row stride in elements. Rows may be
// strided (a slice, a transposed view's base) but each row must be contiguous.
struct Matrix {
    py::array arr;
    py::ssize_t rows;
    py::ssize_t cols;
    std::int64_t ld;
};

Matrix gemm_matrix(const py::handle& obj, const char* name, bool writeable)
{
    if (!py::isinstance<py::array>(obj)) {
        throw py::type_error(std::string("argument '") + name + "' must be a numpy.ndarray, not " +
                             py::str(py::type::handle_of(obj).attr("__name__")).cast<std::string>());
    }
    auto arr = py::reinterpret_borrow<py::array>(obj);
    if (!py::isinstance<py::array_t<float, 0>>(arr) && !py::isinstance<py::array_t<double, 0>>(arr)) {
        throw py::value_error(std::string("argument '") + name + "' has dtype " +
                              py::str(arr.dtype()).cast<std::string>() + "; expected native float32 or float64");
    }
    if (arr.ndim() != 2) {
        throw py::value_error(std::string("argument '") + name + "' must be 2-D, got shape " + describe_shape(arr));
    }
    if (writeable && !arr.writeable()) {
        throw py::value_error(std::string("argument '") + name + "' is read-only");
    }
    const py::ssize_t item = arr.itemsize();
    const py::ssize_t rows = arr.shape(0), cols = arr.shape(1);
    if (rows > 0 && cols > 1 && arr.strides(1) != item) {
        throw py::value_error(std::string("argument '") + name +
                              "' must have contiguous rows (last-axis stride == itemsize); for a "
                              "transposed view x.T pass x with trans_*=True, else np.ascontiguousarray");
    }
    std::int64_t ld = cols > 1 ? cols : 1;
    if (rows > 1) {
        const py::ssize_t s0 = arr.strides(0);
        if (s0 < 0 || s0 % item != 0 || s0 / item < cols) {
            throw py::value_error(std::string("argument '") + name +
                                  "' has a row stride that is negative, not a multiple of the itemsize "
                                  "or shorter than a row; use np.ascontiguousarray");
        }
        ld = s0 / item > 1 ? s0 / item : 1;
    }
    return {arr, rows, cols, ld};
}

// Byte ranges [first, last) spanned by the array's elements (empty arrays span nothing).
bool memory_overlaps(const py::array& x, const py::array& y)
{
    if (x.size() == 0 || y.size() == 0) {
        return false;
    }
    auto span = [](const py::array& a) {
        auto lo = reinterpret_cast<std::uintptr_t>(a.data());
        auto hi = lo + static_cast<std::uintptr_t>(a.itemsize());
        for (py::ssize_t d = 0; d < a.ndim(); ++d) {
            hi += static_cast<std::uintptr_t>((a.shape(d) - 1) * a.strides(d));
        }
        return std::pair<std::uintptr_t, std::uintptr_t>(lo, hi);
    };
    const auto [x0, x1] = span(x);
    const auto [y0, y1] = span(y);
    return x0 < y1 && y0 < x1;
}

template <typename T>
struct GemmKernel;

template <>
struct GemmKernel<float> {
    static constexpr auto ex = fc_sgemm_ex;
};

template <>
struct GemmKernel<double> {
    static constexpr auto ex = fc_dgemm_ex;
};

template <typename T>
py::array gemm_typed(const Matrix& a, const Matrix& b, bool trans_a, bool trans_b, double alpha, double beta,
                     Matrix c, const py::array* bias, int act)
{
    const std::int64_t m = trans_a ? a.cols : a.rows, k = trans_a ? a.rows : a.cols;
    const std::int64_t n = trans_b ? b.rows : b.cols;
    const T* ap = static_cast<const T*>(a.arr.data());
    const T* bp = static_cast<const T*>(b.arr.data());
    T* cp = static_cast<T*>(c.arr.mutable_data());
    const T* biasp = bias != nullptr ? static_cast<const T*>(bias->data()) : nullptr;
    int status;
    {
        py::gil_scoped_release release;
        status = GemmKernel<T>::ex(trans_a ? 1 : 0, trans_b ? 1 : 0, m, n, k, static_cast<T>(alpha), ap, a.ld, bp,
                                   b.ld, static_cast<T>(beta), cp, c.ld, biasp, act);
    }
    check_status(status);
    return c.arr;
}

py::array gemm(const py::handle& a_obj, const py::handle& b_obj, bool trans_a, bool trans_b, double alpha,
               double beta, const py::object& c_obj, const py::object& bias_obj, const std::string& act_name)
{
    const int act = op_code(kGemmActs, act_name, "activation");
    const Matrix a = gemm_matrix(a_obj, "a", false);
    const Matrix b = gemm_matrix(b_obj, "b", false);
    if (!a.arr.dtype().equal(b.arr.dtype())) {
        throw py::value_error("argument 'b' has dtype " + py::str(b.arr.dtype()).cast<std::string>() +
                              " but 'a' has " + py::str(a.arr.dtype()).cast<std::string>());
    }
    const py::ssize_t m = trans_a ? a.cols : a.rows, k = trans_a ? a.rows : a.cols;
    const py::ssize_t kb = trans_b ? b.cols : b.rows, n = trans_b ? b.rows : b.cols;
    if (k != kb) {
        throw py::value_error("op(a) has shape (" + std::to_string(m) + ", " + std::to_string(k) + ") but op(b) has (" +
                              std::to_string(kb) + ", " + std::to_string(n) + ")");
    }
    Matrix c;
    if (c_obj.is_none()) {
        if (beta != 0.0) {
            throw py::value_error("beta != 0 needs an output array c to accumulate into");
        }
        c = gemm_matrix(py::array(a.arr.dtype(), std::vector<py::ssize_t>{m, n}), "c", true);
    } else {
        c = gemm_matrix(c_obj, "c", true);
        if (!c.arr.dtype().equal(a.arr.dtype()) || c.rows != m || c.cols != n) {
            throw py::value_error("argument 'c' must be " + py::str(a.arr.dtype()).cast<std::string>() + " of shape (" +
                                  std::to_string(m) + ", " + std::to_string(n) + "), got " +
                                  py::str(c.arr.dtype()).cast<std::string>() + " " + describe_shape(c.arr));
        }
        if (memory_overlaps(c.arr, a.arr) || memory_overlaps(c.arr, b.arr)) {
            throw py::value_error("argument 'c' must not share memory with 'a' or 'b'");
        }
    }
    py::array bias;
    if (!bias_obj.is_none()) {
        if (!py::isinstance<py::array>(bias_obj)) {
            throw py::type_error("argument 'bias' must be a numpy.ndarray or None");
        }
        bias = py::reinterpret_borrow<py::array>(bias_obj);
        if (!bias.dtype().equal(a.arr.dtype()) || bias.ndim() != 1 || bias.shape(0) != n ||
            (n > 1 && bias.strides(0) != bias.itemsize())) {
            throw py::value_error("argument 'bias' must be a contiguous " + py::str(a.arr.dtype()).cast<std::string>() +
                                  " array of shape (" + std::to_string(n) + ",), got " +
                                  py::str(bias.dtype()).cast<std::string>() + " " + describe_shape(bias));
        }
        if (memory_overlaps(c.arr, bias)) {
            throw py::value_error("argument 'c' must not share memory with 'bias'");
        }
    }
    const py::array* biasp = bias_obj.is_none() ? nullptr : &bias;
    return a.arr.itemsize() == 4 ? gemm_typed<float>(a, b, trans_a, trans_b, alpha, beta, c, biasp, act)
                                 : gemm_typed<double>(a, b, trans_a, trans_b, alpha, beta, c, biasp, act);
}

void set_num_threads(int n)
{
    if (n < 1) {
        throw py::value_error("set_num_threads needs n >= 1, got " + std::to_string(n));
    }
    check_status(fc_set_num_threads(n));
}

std::int64_t gemm_packed_bytes(int dtype, int operand, std::int64_t rows, std::int64_t cols)
{
    std::int64_t bytes = 0;
    check_status(fc_gemm_packed_bytes(dtype, operand, rows, cols, &bytes));
    return bytes;
}

void bind_gemm(py::module_& m)
{
    m.def("gemm_packed_bytes", &gemm_packed_bytes, py::arg("dtype"), py::arg("operand"), py::arg("rows"),
          py::arg("cols"),
          "Bytes of a GEMM operand packed once for many products (fc_gemm_packed_bytes): dtype an fc_dtype\n"
          "code, operand 0 (A, rows x cols = m x k) or 1 (B, k x n). The layout follows this process' ISA.");
    m.attr("GEMM_ACTS") = op_names(kGemmActs);
    m.def("gemm", &gemm, py::arg("a"), py::arg("b"), py::arg("trans_a") = false, py::arg("trans_b") = false,
          py::arg("alpha") = 1.0, py::arg("beta") = 0.0, py::arg("c") = py::none(), py::arg("bias") = py::none(),
          py::arg("act") = "none",
          "act(alpha * op(a) @ op(b) + beta * c + bias) with flexcore's GEMM, op = transpose when trans_*.\n"
          "a, b (and c) 2-D float32/float64 arrays of one dtype whose rows are contiguous (any row stride);\n"
          "c: output, written in place and returned (a new array when None; beta != 0 needs c); bias: (n,);\n"
          "act: 'none', 'relu', 'sigmoid' or 'tanh'. Runs with the GIL released.");
    m.def("set_num_threads", &set_num_threads, py::arg("n"), "Most threads one GEMM uses (n >= 1, capped at 64).");
    m.def("get_num_threads", &fc_get_num_threads, "Most threads one GEMM uses.");
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
    bind_executor(m);
    bind_gemm(m);
}
