// lwc_runner: run an exported TVM Relax artifact (.so) on the CPU and dump its outputs.
//
// Usage: lwc_runner [--repeat N] MODEL.so IN_DIR OUT_DIR
//
// IN_DIR/inputs.txt has one line per input of `main`, in order:
//   name dtype ndim d0 d1 ... filename
// where the file (relative to IN_DIR) holds raw little-endian C-order bytes.
// Each output (a tuple result is flattened one level deep) is written to
// OUT_DIR/output_<i>.bin, and OUT_DIR/outputs.txt gets a line
//   i dtype ndim d0 d1 ... output_<i>.bin
// With --repeat N, main runs N more times and `time_ms <mean>` is printed on stdout.
// Any failure prints one line `lwc_runner: <message>` on stderr and exits with 1.
//
// Built only against the tvm_ffi headers; libtvm_runtime.so must be linked in
// (-Wl,--no-as-needed) because it registers the Relax VM and its builtins.
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

namespace {

// TVM's generated kernels assume 64-byte aligned buffers (kAllocAlignment); plain malloc
// gives 16 and crashes AVX-512 code.
constexpr size_t kAlign = 64;

struct CPUAlloc {
  void AllocData(DLTensor* t) {
    size_t n = ffi::GetDataSize(*t);
    n = (n + kAlign - 1) / kAlign * kAlign;
    t->data = std::aligned_alloc(kAlign, n == 0 ? kAlign : n);
    if (t->data == nullptr) throw std::runtime_error("out of memory");
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

[[noreturn]] void Fail(const std::string& msg) { throw std::runtime_error(msg); }

std::string OneLine(std::string s) {
  for (char& c : s) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return s;
}

ffi::Function GetFunc(const ffi::Module& mod, const std::string& name) {
  ffi::Optional<ffi::Function> f = mod->GetFunction(name);
  if (!f.has_value()) Fail("module has no function '" + name + "'");
  return *f;
}

std::vector<ffi::Tensor> ReadInputs(const std::string& in_dir) {
  std::ifstream list(in_dir + "/inputs.txt");
  if (!list) Fail("cannot open " + in_dir + "/inputs.txt");
  std::vector<ffi::Tensor> inputs;
  std::string line;
  while (std::getline(list, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::istringstream ss(line);
    std::string name, dtype, file;
    int ndim = -1;
    if (!(ss >> name >> dtype >> ndim) || ndim < 0) Fail("bad line in inputs.txt: " + line);
    std::vector<int64_t> shape(ndim);
    for (int64_t& d : shape) {
      if (!(ss >> d) || d < 0) Fail("bad shape in inputs.txt: " + line);
    }
    if (!(ss >> file)) Fail("missing file name in inputs.txt: " + line);

    ffi::Tensor t = ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::Shape(shape),
                                             ffi::StringToDLDataType(dtype), DLDevice{kDLCPU, 0});
    size_t nbytes = ffi::GetDataSize(t);
    std::ifstream data(in_dir + "/" + file, std::ios::binary | std::ios::ate);
    if (!data) Fail("cannot open input file " + file);
    if (static_cast<size_t>(data.tellg()) != nbytes) {
      Fail("input '" + name + "': file " + file + " has " + std::to_string(data.tellg()) +
           " bytes, expected " + std::to_string(nbytes));
    }
    data.seekg(0);
    data.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(nbytes));
    inputs.push_back(t);
  }
  return inputs;
}

// Flatten the result of main (a Tensor or a tuple of Tensors/tuples, one level deep).
void Flatten(const ffi::Any& value, int depth, std::vector<ffi::Tensor>* out) {
  if (auto t = value.as<ffi::Tensor>()) {
    out->push_back(*t);
  } else if (auto arr = value.as<ffi::Array<ffi::Any>>()) {
    if (depth > 1) Fail("output tuple nested more than one level");
    for (const ffi::Any& item : *arr) Flatten(item, depth + 1, out);
  } else {
    Fail("unsupported output type " + value.GetTypeKey());
  }
}

void WriteOutputs(const std::vector<ffi::Tensor>& outputs, const std::string& out_dir) {
  std::ofstream list(out_dir + "/outputs.txt");
  if (!list) Fail("cannot write " + out_dir + "/outputs.txt");
  for (size_t i = 0; i < outputs.size(); ++i) {
    const DLTensor& t = *outputs[i].GetDLTensorPtr();
    if (t.device.device_type != kDLCPU) Fail("output " + std::to_string(i) + " is not on the CPU");
    if (!ffi::IsContiguous(t)) Fail("output " + std::to_string(i) + " is not contiguous");
    std::string file = "output_" + std::to_string(i) + ".bin";
    std::ofstream data(out_dir + "/" + file, std::ios::binary);
    data.write(static_cast<const char*>(t.data) + t.byte_offset,
               static_cast<std::streamsize>(ffi::GetDataSize(t)));
    if (!data) Fail("cannot write " + out_dir + "/" + file);
    list << i << ' ' << std::string(ffi::DLDataTypeToString(t.dtype)) << ' ' << t.ndim;
    for (int d = 0; d < t.ndim; ++d) list << ' ' << t.shape[d];
    list << ' ' << file << '\n';
  }
  if (!list.flush()) Fail("cannot write " + out_dir + "/outputs.txt");
}

int Run(int argc, char** argv) {
  long repeat = 0;
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--repeat") {
      if (i + 1 >= argc) Fail("--repeat needs a number");
      char* end = nullptr;
      repeat = std::strtol(argv[++i], &end, 10);
      if (*end != '\0' || repeat < 0) Fail("--repeat needs a non-negative integer");
    } else {
      pos.push_back(a);
    }
  }
  if (pos.size() != 3) Fail("usage: lwc_runner [--repeat N] MODEL.so IN_DIR OUT_DIR");

  ffi::Module lib = ffi::Module::LoadFromFile(pos[0]);
  ffi::Module vm = GetFunc(lib, "vm_load_executable")().cast<ffi::Module>();
  // One (device type, device id, allocator type) triple per device: CPU 0, pooled allocator.
  GetFunc(vm, "vm_initialization")(static_cast<int>(kDLCPU), 0, 2);
  ffi::Function main_fn = GetFunc(vm, "main");

  std::vector<ffi::Tensor> inputs = ReadInputs(pos[1]);
  std::vector<ffi::AnyView> args(inputs.begin(), inputs.end());
  ffi::Any result;
  main_fn.CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);

  std::vector<ffi::Tensor> outputs;
  Flatten(result, 0, &outputs);
  WriteOutputs(outputs, pos[2]);

  if (repeat > 0) {
    auto start = std::chrono::steady_clock::now();
    for (long r = 0; r < repeat; ++r) {
      ffi::Any ignored;
      main_fn.CallPacked(args.data(), static_cast<int32_t>(args.size()), &ignored);
    }
    std::chrono::duration<double, std::milli> total = std::chrono::steady_clock::now() - start;
    std::printf("time_ms %.6f\n", total.count() / static_cast<double>(repeat));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const ffi::Error& e) {
    std::cerr << "lwc_runner: " << OneLine(e.kind() + ": " + e.message()) << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "lwc_runner: " << OneLine(e.what()) << std::endl;
  } catch (...) {
    std::cerr << "lwc_runner: unknown error" << std::endl;
  }
  return 1;
}
