// lwc_runtime.cc: the C API of lwc_runtime.h over the tvm-ffi C++ API.
//
// Built by lwc (lwc.bundle.build_runtime_library) for the target with its C++ compiler:
//   CXX -std=c++17 -O2 -fPIC -shared -fvisibility=hidden -I<tvm_ffi include>
//       -DLWC_VERSION=\"..\" -DLWC_TVM_VERSION=\"..\" -DLWC_TVM_FFI_VERSION=\"..\"
//       lwc_runtime.cc -Wl,--version-script=lwc_runtime.map
//       -L<runtime lib> -Wl,--no-as-needed -ltvm_runtime -ltvm_ffi
// libtvm_runtime.so must stay linked (--no-as-needed): it registers the Relax VM builtins.
// Only tvm_ffi headers are used; the wheel's tvm/runtime headers do not compile (case D1).
//
// Every exported function catches every exception and turns it into a status code plus a
// thread-local message, so no failure inside TVM or here can abort the caller.
#include "lwc_runtime.h"

#include <tvm/ffi/c_api.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <stdlib.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <set>
#include <sstream>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#if defined(__linux__) && defined(__aarch64__)
#include <sys/auxv.h>
#endif

#ifndef LWC_VERSION
#error "build with -DLWC_VERSION=\"x.y.z\" (lwc.bundle.build_runtime_library does)"
#endif
#ifndef LWC_TVM_VERSION
#error "build with -DLWC_TVM_VERSION=\"...\" (the apache-tvm version of libtvm_runtime.so)"
#endif
#ifndef LWC_TVM_FFI_VERSION
#error "build with -DLWC_TVM_FFI_VERSION=\"...\" (the apache-tvm-ffi version of libtvm_ffi.so)"
#endif

#if defined(__aarch64__)
#define LWC_ARCH "aarch64"
#define LWC_GENERIC_PRESET "arm64"
#elif defined(__x86_64__)
#define LWC_ARCH "x86_64"
#define LWC_GENERIC_PRESET "x86_64"
#else
#define LWC_ARCH "unknown"
#define LWC_GENERIC_PRESET "host"
#endif

namespace ffi = tvm::ffi;

namespace {

constexpr int kManifestFormat = 1;

thread_local std::string g_last_error;

// A failure with its status code; thrown inside, caught at the API boundary.
struct Failure {
  lwc_status status;
  std::string message;
};

[[noreturn]] void Fail(lwc_status status, std::string message) {
  throw Failure{status, std::move(message)};
}

std::string OneLine(std::string s) {
  for (char& c : s) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return s;
}

// ------------------------------------------------------------------------ tiny JSON
// Enough of RFC 8259 for lwc manifests: objects, arrays, strings, numbers, literals.
struct Json {
  enum Kind { kNull, kBool, kNumber, kString, kArray, kObject } kind = kNull;
  bool boolean = false;
  double number = 0;
  std::string str;
  std::vector<Json> items;
  std::map<std::string, Json> fields;

  const Json* Get(const std::string& key) const {
    if (kind != kObject) return nullptr;
    auto it = fields.find(key);
    return it == fields.end() ? nullptr : &it->second;
  }
};

class JsonParser {
 public:
  explicit JsonParser(const std::string& text) : s_(text) {}

  Json Parse() {
    Json v = Value(0);
    Space();
    if (pos_ != s_.size()) Error("trailing characters");
    return v;
  }

 private:
  [[noreturn]] void Error(const char* what) {
    Fail(LWC_ERR_MANIFEST, std::string("malformed JSON (") + what + " at byte " +
                               std::to_string(pos_) + ")");
  }
  void Space() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  bool Eat(char c) {
    Space();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void Expect(char c) {
    if (!Eat(c)) Error("unexpected character");
  }
  Json Value(int depth) {
    if (depth > 64) Error("nesting too deep");
    Space();
    if (pos_ >= s_.size()) Error("unexpected end");
    char c = s_[pos_];
    Json v;
    if (c == '{') {
      ++pos_;
      v.kind = Json::kObject;
      if (Eat('}')) return v;
      do {
        Space();
        std::string key = String();
        Expect(':');
        v.fields[key] = Value(depth + 1);
      } while (Eat(','));
      Expect('}');
    } else if (c == '[') {
      ++pos_;
      v.kind = Json::kArray;
      if (Eat(']')) return v;
      do {
        v.items.push_back(Value(depth + 1));
      } while (Eat(','));
      Expect(']');
    } else if (c == '"') {
      v.kind = Json::kString;
      v.str = String();
    } else if (Literal("true")) {
      v.kind = Json::kBool;
      v.boolean = true;
    } else if (Literal("false")) {
      v.kind = Json::kBool;
    } else if (Literal("null")) {
      v.kind = Json::kNull;
    } else {
      v.kind = Json::kNumber;
      v.number = Number();
    }
    return v;
  }
  bool Literal(const char* word) {
    size_t n = std::strlen(word);
    if (s_.compare(pos_, n, word) == 0) {
      pos_ += n;
      return true;
    }
    return false;
  }
  double Number() {
    size_t start = pos_;
    while (pos_ < s_.size() && std::strchr("+-0123456789.eE", s_[pos_]) != nullptr) ++pos_;
    if (pos_ == start) Error("unexpected character");
    std::string text = s_.substr(start, pos_ - start);
    char* end = nullptr;
    double d = std::strtod(text.c_str(), &end);
    if (end == nullptr || *end != '\0') Error("bad number");
    return d;
  }
  void AppendUtf8(unsigned cp, std::string* out) {
    if (cp < 0x80) {
      out->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }
  std::string String() {
    if (pos_ >= s_.size() || s_[pos_] != '"') Error("expected a string");
    ++pos_;
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) Error("unterminated string");
      char c = s_[pos_++];
      if (c == '"') return out;
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (pos_ >= s_.size()) Error("unterminated string");
      char e = s_[pos_++];
      switch (e) {
        case '"': case '\\': case '/': out.push_back(e); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
          if (pos_ + 4 > s_.size()) Error("bad \\u escape");
          unsigned cp = 0;
          for (int i = 0; i < 4; ++i) {
            char h = s_[pos_++];
            cp <<= 4;
            if (h >= '0' && h <= '9') cp |= static_cast<unsigned>(h - '0');
            else if (h >= 'a' && h <= 'f') cp |= static_cast<unsigned>(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F') cp |= static_cast<unsigned>(h - 'A' + 10);
            else Error("bad \\u escape");
          }
          AppendUtf8(cp, &out);  // surrogate pairs are kept as two 3-byte sequences
          break;
        }
        default: Error("bad escape");
      }
    }
  }

  const std::string& s_;
  size_t pos_ = 0;
};

// ------------------------------------------------------------------------ dtypes

struct DtypeEntry {
  lwc_dtype dtype;
  const char* name;
  size_t size;
  DLDataType dl;
};

const DtypeEntry kDtypes[] = {
    {LWC_FLOAT16, "float16", 2, {kDLFloat, 16, 1}},
    {LWC_FLOAT32, "float32", 4, {kDLFloat, 32, 1}},
    {LWC_FLOAT64, "float64", 8, {kDLFloat, 64, 1}},
    {LWC_INT8, "int8", 1, {kDLInt, 8, 1}},
    {LWC_INT16, "int16", 2, {kDLInt, 16, 1}},
    {LWC_INT32, "int32", 4, {kDLInt, 32, 1}},
    {LWC_INT64, "int64", 8, {kDLInt, 64, 1}},
    {LWC_UINT8, "uint8", 1, {kDLUInt, 8, 1}},
    {LWC_UINT16, "uint16", 2, {kDLUInt, 16, 1}},
    {LWC_UINT32, "uint32", 4, {kDLUInt, 32, 1}},
    {LWC_UINT64, "uint64", 8, {kDLUInt, 64, 1}},
    {LWC_BOOL, "bool", 1, {kDLBool, 8, 1}},
};

const DtypeEntry* FindDtype(lwc_dtype dtype) {
  for (const DtypeEntry& e : kDtypes) {
    if (e.dtype == dtype) return &e;
  }
  return nullptr;
}

const DtypeEntry* FindDtype(const std::string& name) {
  for (const DtypeEntry& e : kDtypes) {
    if (name == e.name) return &e;
  }
  return nullptr;
}

const DtypeEntry* FindDtype(DLDataType dl) {
  for (const DtypeEntry& e : kDtypes) {
    if (e.dl.code == dl.code && e.dl.bits == dl.bits && e.dl.lanes == dl.lanes) return &e;
  }
  return nullptr;
}

// ------------------------------------------------------------------------ manifest

// A dim of a dynamic-dims compile (`--input-shape x:1,3,48,96..1280`) is -1 in `shape`;
// `symbol` names it (manifest "dims": {"x_3": [96, 1280]}) and [lo, hi] bounds it. A fixed
// dim has lo == hi == shape[i] and no symbol. Output dims computed from symbols are -1
// (no range) until a run gives the actual shape.
struct TensorSpec {
  std::string name;
  lwc_dtype dtype = LWC_DTYPE_UNKNOWN;
  std::vector<int64_t> shape;
  std::vector<std::string> symbol;
  std::vector<int64_t> lo, hi;
  size_t nbytes = 0;  // 0 while a dim is -1
  bool dynamic() const {
    for (int64_t d : shape) {
      if (d < 0) return true;
    }
    return false;
  }
};

std::string ShapeText(const int64_t* shape, int64_t ndim) {
  std::string s = "[";
  for (int64_t i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// "[1, 3, 48, x_3] with x_3 in 96..1280": what an input accepts, for messages.
std::string AcceptedText(const TensorSpec& spec) {
  std::string s = "[", ranges;
  for (size_t i = 0; i < spec.shape.size(); ++i) {
    s += (i ? ", " : "") + (spec.symbol[i].empty() ? std::to_string(spec.shape[i]) : spec.symbol[i]);
    if (!spec.symbol[i].empty() && ranges.find(spec.symbol[i] + " in ") == std::string::npos) {
      ranges += (ranges.empty() ? " with " : ", ") + spec.symbol[i] + " in " + std::to_string(spec.lo[i]) +
                ".." + std::to_string(spec.hi[i]);
    }
  }
  return s + "]" + ranges;
}

size_t SizeOf(const std::vector<int64_t>& shape, lwc_dtype dtype) {
  size_t n = FindDtype(dtype)->size;
  for (int64_t d : shape) {
    if (d < 0) return 0;
    n *= static_cast<size_t>(d);
  }
  return n;
}

const std::string& StringField(const Json& obj, const std::string& key, const std::string& where) {
  const Json* v = obj.Get(key);
  if (v == nullptr || v->kind != Json::kString) {
    Fail(LWC_ERR_MANIFEST, "manifest " + where + " has no string field '" + key + "'");
  }
  return v->str;
}

std::vector<TensorSpec> ReadSpecs(const Json& root, const std::string& key, bool dynamic_outputs = false) {
  const Json* list = root.Get(key);
  if (list == nullptr || list->kind != Json::kArray || list->items.empty()) {
    Fail(LWC_ERR_MANIFEST, "manifest has no '" + key + "' list");
  }
  std::vector<TensorSpec> specs;
  for (const Json& item : list->items) {
    std::string where = "'" + key + "' entry " + std::to_string(specs.size());
    TensorSpec spec;
    spec.name = StringField(item, "name", where);
    const std::string& dtype = StringField(item, "dtype", where);
    const DtypeEntry* e = FindDtype(dtype);
    if (e == nullptr) Fail(LWC_ERR_UNSUPPORTED, key + " '" + spec.name + "' has unsupported dtype " + dtype);
    spec.dtype = e->dtype;
    const Json* shape = item.Get("shape");
    if (shape == nullptr || shape->kind != Json::kArray) {
      Fail(LWC_ERR_MANIFEST, "manifest " + where + " has no shape list");
    }
    // Each dim a whole number in [0, 2^53] (compared as a double before any cast: a
    // cast of 1e30 to int64 is undefined), and the tensor's byte size must fit a size_t.
    // A string dim is a symbol: an input's must have a range in its "dims"; an output's
    // (an expression of the symbols) is allowed where some input has ranges.
    constexpr double kMaxDim = 9007199254740992.0;  // 2^53
    const Json* dims = item.Get("dims");
    size_t nbytes = FindDtype(spec.dtype)->size;
    bool overflow = false;
    for (const Json& d : shape->items) {
      if (d.kind == Json::kString && (dims != nullptr || (key == "outputs" && dynamic_outputs))) {
        const Json* range = dims == nullptr ? nullptr : dims->Get(d.str);
        int64_t lo = 0, hi = -1;
        if (range != nullptr) {
          bool ok = range->kind == Json::kArray && range->items.size() == 2;
          for (size_t k = 0; ok && k < 2; ++k) {
            double v = range->items[k].number;
            ok = range->items[k].kind == Json::kNumber && v >= 0 && v <= kMaxDim &&
                 v == static_cast<double>(static_cast<int64_t>(v));
          }
          if (!ok) Fail(LWC_ERR_MANIFEST, key + " '" + spec.name + "': dim " + d.str + " has a bad range");
          lo = static_cast<int64_t>(range->items[0].number);
          hi = static_cast<int64_t>(range->items[1].number);
        } else if (key == "inputs") {
          Fail(LWC_ERR_MANIFEST, key + " '" + spec.name + "': dim " + d.str + " has no range in 'dims'");
        }
        spec.shape.push_back(-1);
        spec.symbol.push_back(d.str);
        spec.lo.push_back(lo);
        spec.hi.push_back(hi);
        continue;
      }
      if (d.kind != Json::kNumber || !(d.number >= 0 && d.number <= kMaxDim) ||
          d.number != static_cast<double>(static_cast<int64_t>(d.number))) {
        Fail(LWC_ERR_MANIFEST, key + " '" + spec.name + "' has a non-static shape in the manifest");
      }
      int64_t dim = static_cast<int64_t>(d.number);
      overflow = overflow || __builtin_mul_overflow(nbytes, static_cast<size_t>(dim), &nbytes);
      spec.shape.push_back(dim);
      spec.symbol.emplace_back();
      spec.lo.push_back(dim);
      spec.hi.push_back(dim);
    }
    if (overflow || spec.shape.size() > 64) {
      Fail(LWC_ERR_MANIFEST, key + " '" + spec.name + "' has an impossible shape in the manifest " +
                                 ShapeText(spec.shape.data(), static_cast<int64_t>(spec.shape.size())));
    }
    spec.nbytes = spec.dynamic() ? 0 : nbytes;
    specs.push_back(std::move(spec));
  }
  return specs;
}

std::string ManifestPath(const std::string& so_path) {
  size_t slash = so_path.find_last_of('/');
  size_t dot = so_path.find_last_of('.');
  if (dot != std::string::npos && (slash == std::string::npos || dot > slash)) {
    return so_path.substr(0, dot) + ".json";
  }
  return so_path + ".json";
}

Json ReadManifest(const std::string& so_path) {
  std::string path = ManifestPath(so_path);
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    Fail(LWC_ERR_MANIFEST, "manifest " + path + " not found; an lwc model is NAME.so plus NAME.json "
                           "(recompile with `lwc compile`)");
  }
  std::stringstream ss;
  ss << f.rdbuf();
  try {
    return JsonParser(ss.str()).Parse();
  } catch (const Failure& f) {
    Fail(LWC_ERR_MANIFEST, "manifest " + path + ": " + f.message);
  }
}

// ------------------------------------------------------------------------ load checks

// "0.1.14.post0" -> "0.1.14"
std::string NumericPrefix(const std::string& v) {
  size_t dots = 0, i = 0;
  for (; i < v.size(); ++i) {
    if (v[i] == '.' && ++dots == 3) break;
    if (v[i] != '.' && !std::isdigit(static_cast<unsigned char>(v[i]))) break;
  }
  return v.substr(0, i);
}

void CheckVersions(const Json& manifest) {
  const Json* format = manifest.Get("format");
  if (format == nullptr || format->kind != Json::kNumber || format->number != kManifestFormat) {
    Fail(LWC_ERR_VERSION_MISMATCH,
         "manifest format is not " + std::to_string(kManifestFormat) +
             "; this lwc_runtime (" LWC_VERSION ") cannot read it: use the lwc_runtime of the "
             "lwc that compiled the model");
  }
  const Json* versions = manifest.Get("versions");
  if (versions == nullptr || versions->kind != Json::kObject) {
    Fail(LWC_ERR_MANIFEST, "manifest records no versions; refusing to load (recompile)");
  }
  const std::pair<const char*, const char*> wanted[] = {
      {"apache-tvm", LWC_TVM_VERSION}, {"apache-tvm-ffi", LWC_TVM_FFI_VERSION}};
  for (const auto& w : wanted) {
    const std::string& built = StringField(*versions, w.first, "versions");
    if (built != w.second) {
      Fail(LWC_ERR_VERSION_MISMATCH,
           std::string("model was built with ") + w.first + " " + built + " but this runtime has " +
               w.second + "; loading it could crash: use the runtime libraries of " + w.first +
               " " + built + " (an `lwc compile --bundle` ships them) or recompile the model");
    }
  }
  // The libtvm_ffi.so actually loaded must be the one this library was built against.
  TVMFFIVersion v;
  TVMFFIGetVersion(&v);
  std::string loaded = std::to_string(v.major) + "." + std::to_string(v.minor) + "." +
                       std::to_string(v.patch);
  if (loaded != NumericPrefix(LWC_TVM_FFI_VERSION)) {
    Fail(LWC_ERR_VERSION_MISMATCH, "the loaded libtvm_ffi.so is version " + loaded +
                                       " but lwc_runtime was built for apache-tvm-ffi " LWC_TVM_FFI_VERSION
                                       "; put the matching libtvm_ffi.so first on the library path");
  }
}

std::set<std::string> ParseFeatureList(const char* text) {
  std::set<std::string> out;
  std::string item;
  for (const char* p = text;; ++p) {
    if (*p == ',' || *p == ' ' || *p == '\0') {
      if (!item.empty()) out.insert(item);
      item.clear();
      if (*p == '\0') break;
    } else {
      item.push_back(*p);
    }
  }
  return out;
}

std::set<std::string> CpuinfoFlags() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    while (!key.empty() && std::isspace(static_cast<unsigned char>(key.back()))) key.pop_back();
    if (key == "flags" || key == "Features") {
      std::set<std::string> flags;
      std::istringstream ss(line.substr(colon + 1));
      std::string w;
      while (ss >> w) flags.insert(w);
      return flags;
    }
  }
  return {};
}

// lwc feature names (targets/__init__.py host_features) present on this CPU.
std::set<std::string> CpuFeatures(std::string* source) {
  if (const char* env = std::getenv("LWC_CPU_FEATURES")) {
    *source = "LWC_CPU_FEATURES";
    return ParseFeatureList(env);
  }
  std::set<std::string> out;
#if defined(__linux__) && defined(__aarch64__)
  unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
  if (hw != 0) {
    *source = "AT_HWCAP";
    if (hw & (1UL << 1)) out.insert("neon");      // HWCAP_ASIMD
    if (hw & (1UL << 20)) out.insert("dotprod");  // HWCAP_ASIMDDP
    if (hw & (1UL << 10)) out.insert("fp16");     // HWCAP_ASIMDHP
    if (hw2 & (1UL << 13)) out.insert("i8mm");    // HWCAP2_I8MM
    return out;
  }
#endif
  *source = "/proc/cpuinfo";
  std::set<std::string> flags = CpuinfoFlags();
  const std::pair<const char*, const char*> table[] = {
      {"avx2", "avx2"},   {"fma", "fma"},         {"avx512f", "avx512"}, {"avx512_vnni", "vnni"},
      {"avx_vnni", "vnni"}, {"asimd", "neon"},    {"asimddp", "dotprod"}, {"asimdhp", "fp16"},
      {"i8mm", "i8mm"}};
  for (const auto& t : table) {
    if (flags.count(t.first)) out.insert(t.second);
  }
  return out;
}

void CheckTarget(const Json& manifest) {
  const Json* target = manifest.Get("target");
  if (target == nullptr || target->kind != Json::kObject) Fail(LWC_ERR_MANIFEST, "manifest has no target");
  const std::string& arch = StringField(*target, "arch", "target");
  const std::string& preset = StringField(*target, "preset", "target");
  if (arch != LWC_ARCH) {
    Fail(LWC_ERR_UNSUPPORTED, "model was compiled for " + arch + " (target " + preset +
                                  ") but this runtime runs on " LWC_ARCH
                                  ": recompile with a matching --target");
  }
  const Json* tvm = target->Get("tvm");
  if (tvm != nullptr && tvm->Get("kind") != nullptr && tvm->Get("kind")->str != "llvm") {
    Fail(LWC_ERR_UNSUPPORTED, "model targets " + tvm->Get("kind")->str + " (" + preset +
                                  "); this lwc_runtime runs CPU (llvm) models only");
  }
  const Json* features = target->Get("features");
  if (features == nullptr || features->kind != Json::kArray) return;
  static const std::set<std::string> kChecked = {"neon", "dotprod", "fp16", "i8mm",
                                                 "avx2", "fma",     "avx512", "vnni"};
  std::string source;
  std::set<std::string> have = CpuFeatures(&source);
  std::string missing;
  for (const Json& f : features->items) {
    if (f.kind == Json::kString && kChecked.count(f.str) && !have.count(f.str)) {
      missing += (missing.empty() ? "" : ", ") + f.str;
    }
  }
  if (!missing.empty()) {
    Fail(LWC_ERR_UNSUPPORTED, "model was compiled for " + preset + " and uses " + missing +
                                  ", which this CPU lacks (per " + source +
                                  "); it would die with SIGILL: recompile for this board "
                                  "(e.g. --target " LWC_GENERIC_PRESET ")");
  }
}

template <typename T>
T ReadLE(const unsigned char* p) {
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<T>(p[i]) << (8 * i);
  return v;
}

// A shared library whose program headers and loadable segments lie inside the file.
// dlopen maps each PT_LOAD segment and clears its tail: for a truncated file that touches
// pages past the end of the file and the process dies with SIGBUS inside dlopen.
void CheckElfLayout(const std::string& path, std::ifstream& f) {
#if defined(__x86_64__) || defined(__aarch64__)  // ELF64, little-endian
  f.clear();
  f.seekg(0, std::ios::end);
  const uint64_t size = static_cast<uint64_t>(f.tellg());
  unsigned char h[64] = {0};
  f.seekg(0);
  f.read(reinterpret_cast<char*>(h), sizeof(h));
  const std::string bad = "model " + path + " is not a complete ELF shared library (";
  if (f.gcount() < 64 || h[4] != 2 || h[5] != 1) Fail(LWC_ERR_RUNTIME, bad + "not ELF64 little-endian)");
  if (ReadLE<uint16_t>(h + 16) != 3) Fail(LWC_ERR_RUNTIME, bad + "ELF type is not ET_DYN)");
  const uint64_t phoff = ReadLE<uint64_t>(h + 32);
  const uint16_t phentsize = ReadLE<uint16_t>(h + 54), phnum = ReadLE<uint16_t>(h + 56);
  if (phentsize != 56 || phnum == 0 || phoff > size || (size - phoff) / 56 < phnum) {
    Fail(LWC_ERR_RUNTIME, bad + "program headers missing or past the end of the file; truncated?)");
  }
  std::vector<unsigned char> ph(static_cast<size_t>(phnum) * 56);
  f.seekg(static_cast<std::streamoff>(phoff));
  f.read(reinterpret_cast<char*>(ph.data()), static_cast<std::streamsize>(ph.size()));
  if (static_cast<size_t>(f.gcount()) != ph.size()) Fail(LWC_ERR_RUNTIME, bad + "short read)");
  for (uint16_t i = 0; i < phnum; ++i) {
    const unsigned char* p = ph.data() + static_cast<size_t>(i) * 56;
    const uint32_t type = ReadLE<uint32_t>(p);
    const uint64_t offset = ReadLE<uint64_t>(p + 8), filesz = ReadLE<uint64_t>(p + 32);
    if ((type == 1 || type == 2) && (offset > size || filesz > size - offset)) {  // PT_LOAD, PT_DYNAMIC
      Fail(LWC_ERR_RUNTIME, bad + "segment " + std::to_string(i) + " ends at byte " +
                                std::to_string(offset + filesz) + " of " + std::to_string(size) +
                                "; truncated?)");
    }
  }
#else
  (void)path;
  (void)f;
#endif
}

// e_machine of an ELF file, or a failure with a clear message.
void CheckElf(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) Fail(LWC_ERR_FILE_NOT_FOUND, "model " + path + " not found or unreadable");
  unsigned char h[20] = {0};
  f.read(reinterpret_cast<char*>(h), sizeof(h));
  if (f.gcount() < 20 || std::memcmp(h, "\x7f" "ELF", 4) != 0) {
    Fail(LWC_ERR_RUNTIME, "model " + path + " is not an ELF shared library");
  }
  unsigned machine = h[5] == 1 ? (h[18] | (h[19] << 8)) : ((h[18] << 8) | h[19]);
#if defined(__aarch64__)
  const unsigned expected = 183;
#elif defined(__x86_64__)
  const unsigned expected = 62;
#else
  const unsigned expected = machine;
#endif
  if (machine != expected) {
    Fail(LWC_ERR_UNSUPPORTED, "model " + path + " holds code for ELF machine " +
                                  std::to_string(machine) + ", not " LWC_ARCH);
  }
  CheckElfLayout(path, f);
}

// ------------------------------------------------------------------------ the model

// TVM's generated code assumes 64-byte aligned buffers (kAllocAlignment): on x86-64 with
// AVX-512 an input from plain malloc (16-byte aligned) faults in an aligned vector load.
constexpr size_t kAlignment = 64;

struct CPUAlloc {
  void AllocData(DLTensor* t) {
    size_t n = ffi::GetDataSize(*t);
    n = (n + kAlignment - 1) / kAlignment * kAlignment;
    t->data = std::aligned_alloc(kAlignment, n == 0 ? kAlignment : n);
    if (t->data == nullptr) throw std::bad_alloc();
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

ffi::Function GetFunc(const ffi::Module& mod, const std::string& name) {
  ffi::Optional<ffi::Function> f = mod->GetFunction(name);
  if (!f.has_value()) Fail(LWC_ERR_RUNTIME, "module has no function '" + name + "'");
  return *f;
}

void Flatten(const ffi::Any& value, int depth, std::vector<ffi::Tensor>* out) {
  if (auto t = value.as<ffi::Tensor>()) {
    out->push_back(*t);
  } else if (auto arr = value.as<ffi::Array<ffi::Any>>()) {
    if (depth > 1) Fail(LWC_ERR_RUNTIME, "output tuple nested more than one level");
    for (const ffi::Any& item : *arr) Flatten(item, depth + 1, out);
  } else {
    Fail(LWC_ERR_RUNTIME, "unsupported output type " + value.GetTypeKey());
  }
}

}  // namespace

struct lwc_model {
  std::string path;
  std::vector<TensorSpec> inputs, outputs;
  std::vector<bool> input_set;
  ffi::Module lib{ffi::UnsafeInit()};
  ffi::Module vm{ffi::UnsafeInit()};
  ffi::Function main_fn;
  // allocated by the first lwc_model_set_input of each (never from manifest numbers alone)
  std::vector<ffi::Optional<ffi::Tensor>> input_tensors;
  std::vector<ffi::Tensor> output_tensors;  // of the last run
  std::vector<std::vector<int64_t>> output_shapes;
};

namespace {

template <typename F>
lwc_status Guard(F&& body) {
  try {
    body();
    return LWC_OK;
  } catch (const Failure& f) {
    g_last_error = OneLine(f.message);
    return f.status;
  } catch (const ffi::Error& e) {
    g_last_error = OneLine("TVM: " + e.kind() + ": " + e.message());
    return LWC_ERR_RUNTIME;
  } catch (const std::bad_alloc&) {
    g_last_error = "out of memory";
    return LWC_ERR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    g_last_error = OneLine(e.what());
    return LWC_ERR_RUNTIME;
  } catch (...) {
    g_last_error = "unknown C++ exception";
    return LWC_ERR_RUNTIME;
  }
}

void NotNull(const void* p, const char* what) {
  if (p == nullptr) Fail(LWC_ERR_INVALID_ARGUMENT, std::string(what) + " is NULL");
}

// Every handle lwc_model_load returned and lwc_model_free has not released yet. A call
// with any other pointer (freed, never loaded, garbage) fails before it is dereferenced,
// and a second lwc_model_free of a handle is an error, not a double free. A freed
// handle's address can be handed out again by a later load; that one is live again.
std::mutex g_handles_mutex;
std::unordered_set<const lwc_model*>* g_handles = new std::unordered_set<const lwc_model*>();

void CheckLive(const lwc_model* model) {
  NotNull(model, "model");
  std::lock_guard<std::mutex> lock(g_handles_mutex);
  if (g_handles->count(model) == 0) {
    Fail(LWC_ERR_INVALID_ARGUMENT, "model handle is not live (already freed, or not from lwc_model_load)");
  }
}

void CheckIndex(int32_t index, size_t count, const char* what) {
  if (index < 0 || static_cast<size_t>(index) >= count) {
    Fail(LWC_ERR_INVALID_ARGUMENT, std::string(what) + " index " + std::to_string(index) +
                                       " out of range (the model has " + std::to_string(count) + ")");
  }
}

// A dynamic input's shape against its ranges, and a symbol shared with another input
// that is already set against that input's value. LWC_ERR_SHAPE_MISMATCH naming the
// input, the dim and what is accepted.
void CheckDynamicShape(const lwc_model& model, int32_t index, const std::vector<int64_t>& given) {
  const TensorSpec& spec = model.inputs[index];
  if (given.size() != spec.shape.size()) {
    Fail(LWC_ERR_SHAPE_MISMATCH, "input '" + spec.name + "' has shape " +
                                     ShapeText(given.data(), static_cast<int64_t>(given.size())) + " (rank " +
                                     std::to_string(given.size()) + "); the model accepts " + AcceptedText(spec));
  }
  for (size_t i = 0; i < given.size(); ++i) {
    std::string axis = "input '" + spec.name + "' dim " + std::to_string(i);
    if (spec.symbol[i].empty()) {
      if (given[i] != spec.shape[i]) {
        Fail(LWC_ERR_SHAPE_MISMATCH, axis + " is " + std::to_string(given[i]) + ", the model accepts only " +
                                         std::to_string(spec.shape[i]) + " there: " + AcceptedText(spec));
      }
      continue;
    }
    axis += " (" + spec.symbol[i] + ")";
    if (given[i] < spec.lo[i] || given[i] > spec.hi[i]) {
      Fail(LWC_ERR_SHAPE_MISMATCH, axis + " is " + std::to_string(given[i]) + ", outside the accepted range " +
                                       std::to_string(spec.lo[i]) + ".." + std::to_string(spec.hi[i]) +
                                       ": the model accepts " + AcceptedText(spec));
    }
    for (size_t j = 0; j < model.inputs.size(); ++j) {
      const TensorSpec& other = model.inputs[j];
      if (static_cast<int32_t>(j) == index || !model.input_set[j] || !model.input_tensors[j].has_value()) continue;
      const DLTensor& t = *model.input_tensors[j].value().GetDLTensorPtr();
      for (size_t k = 0; k < other.symbol.size() && k < static_cast<size_t>(t.ndim); ++k) {
        if (other.symbol[k] == spec.symbol[i] && t.shape[k] != given[i]) {
          Fail(LWC_ERR_SHAPE_MISMATCH, axis + " is " + std::to_string(given[i]) + ", but " + spec.symbol[i] +
                                           " is " + std::to_string(t.shape[k]) + " in input '" + other.name + "'");
        }
      }
    }
  }
}

void FillInfo(const TensorSpec& spec, const std::vector<int64_t>& shape, lwc_tensor_info* out) {
  out->name = spec.name.c_str();
  out->dtype = spec.dtype;
  out->ndim = static_cast<int32_t>(shape.size());
  out->shape = shape.data();
  out->nbytes = SizeOf(shape, spec.dtype);
}

}  // namespace

extern "C" {

const char* lwc_runtime_version(void) {
  return "lwc_runtime " LWC_VERSION " (apache-tvm " LWC_TVM_VERSION ", apache-tvm-ffi " LWC_TVM_FFI_VERSION
         ", " LWC_ARCH ")";
}

const char* lwc_last_error(void) { return g_last_error.c_str(); }

const char* lwc_status_name(lwc_status status) {
  switch (status) {
    case LWC_OK: return "LWC_OK";
    case LWC_ERR_INVALID_ARGUMENT: return "LWC_ERR_INVALID_ARGUMENT";
    case LWC_ERR_FILE_NOT_FOUND: return "LWC_ERR_FILE_NOT_FOUND";
    case LWC_ERR_MANIFEST: return "LWC_ERR_MANIFEST";
    case LWC_ERR_VERSION_MISMATCH: return "LWC_ERR_VERSION_MISMATCH";
    case LWC_ERR_UNSUPPORTED: return "LWC_ERR_UNSUPPORTED";
    case LWC_ERR_SHAPE_MISMATCH: return "LWC_ERR_SHAPE_MISMATCH";
    case LWC_ERR_DTYPE_MISMATCH: return "LWC_ERR_DTYPE_MISMATCH";
    case LWC_ERR_SIZE_MISMATCH: return "LWC_ERR_SIZE_MISMATCH";
    case LWC_ERR_NOT_READY: return "LWC_ERR_NOT_READY";
    case LWC_ERR_RUNTIME: return "LWC_ERR_RUNTIME";
    case LWC_ERR_OUT_OF_MEMORY: return "LWC_ERR_OUT_OF_MEMORY";
  }
  return "LWC_ERR_UNKNOWN_STATUS";
}

const char* lwc_dtype_name(lwc_dtype dtype) {
  const DtypeEntry* e = FindDtype(dtype);
  return e ? e->name : "unknown";
}

size_t lwc_dtype_size(lwc_dtype dtype) {
  const DtypeEntry* e = FindDtype(dtype);
  return e ? e->size : 0;
}

lwc_status lwc_model_load(const char* path, lwc_model** out) {
  if (out != nullptr) *out = nullptr;
  return Guard([&] {
    NotNull(out, "out");
    NotNull(path, "path");
    std::string so = path;
    {
      std::ifstream probe(so, std::ios::binary);
      if (!probe) Fail(LWC_ERR_FILE_NOT_FOUND, "model " + so + " not found or unreadable");
    }
    Json manifest = ReadManifest(so);
    CheckVersions(manifest);
    CheckTarget(manifest);
    CheckElf(so);

    std::unique_ptr<lwc_model> m(new lwc_model());
    m->path = so;
    m->inputs = ReadSpecs(manifest, "inputs");
    bool dynamic = false;
    for (const TensorSpec& s : m->inputs) dynamic = dynamic || s.dynamic();
    m->outputs = ReadSpecs(manifest, "outputs", dynamic);
    m->input_set.assign(m->inputs.size(), false);
    for (const TensorSpec& s : m->outputs) m->output_shapes.push_back(s.shape);

    // dlopen searches the library path for a name without '/': give it an absolute path.
    char* real = realpath(so.c_str(), nullptr);
    std::string resolved = real != nullptr ? real : so;
    std::free(real);
    m->lib = ffi::Module::LoadFromFile(resolved);
    m->vm = GetFunc(m->lib, "vm_load_executable")().cast<ffi::Module>();
    // One (device type, device id, allocator type) triple per device: CPU 0, pooled.
    GetFunc(m->vm, "vm_initialization")(static_cast<int>(kDLCPU), 0, 2);
    m->main_fn = GetFunc(m->vm, "main");
    // Input buffers are allocated by lwc_model_set_input, once the caller has passed that
    // many bytes: a manifest edited to claim a huge shape must not allocate gigabytes here.
    m->input_tensors.resize(m->inputs.size());
    {
      std::lock_guard<std::mutex> lock(g_handles_mutex);
      g_handles->insert(m.get());
    }
    *out = m.release();
  });
}

lwc_status lwc_model_free(lwc_model* model) {
  return Guard([&] {
    if (model == nullptr) return;
    {
      std::lock_guard<std::mutex> lock(g_handles_mutex);
      if (g_handles->erase(model) == 0) {
        Fail(LWC_ERR_INVALID_ARGUMENT, "model handle is not live (already freed, or not from lwc_model_load)");
      }
    }
    delete model;
  });
}

lwc_status lwc_model_num_inputs(const lwc_model* model, int32_t* out) {
  return Guard([&] {
    CheckLive(model);
    NotNull(out, "out");
    *out = static_cast<int32_t>(model->inputs.size());
  });
}

lwc_status lwc_model_num_outputs(const lwc_model* model, int32_t* out) {
  return Guard([&] {
    CheckLive(model);
    NotNull(out, "out");
    *out = static_cast<int32_t>(model->outputs.size());
  });
}

lwc_status lwc_model_input_info(const lwc_model* model, int32_t index, lwc_tensor_info* out) {
  return Guard([&] {
    CheckLive(model);
    NotNull(out, "out");
    CheckIndex(index, model->inputs.size(), "input");
    FillInfo(model->inputs[index], model->inputs[index].shape, out);
  });
}

lwc_status lwc_model_output_info(const lwc_model* model, int32_t index, lwc_tensor_info* out) {
  return Guard([&] {
    CheckLive(model);
    NotNull(out, "out");
    CheckIndex(index, model->outputs.size(), "output");
    FillInfo(model->outputs[index], model->output_shapes[index], out);
  });
}

lwc_status lwc_model_input_dim_range(const lwc_model* model, int32_t index, int32_t axis, int64_t* lo,
                                     int64_t* hi) {
  return Guard([&] {
    CheckLive(model);
    NotNull(lo, "lo");
    NotNull(hi, "hi");
    CheckIndex(index, model->inputs.size(), "input");
    const TensorSpec& spec = model->inputs[index];
    CheckIndex(axis, spec.shape.size(), "dim");
    *lo = spec.lo[axis];
    *hi = spec.hi[axis];
  });
}

lwc_status lwc_model_input_index(const lwc_model* model, const char* name, int32_t* out) {
  return Guard([&] {
    CheckLive(model);
    NotNull(name, "name");
    NotNull(out, "out");
    std::string names;
    for (size_t i = 0; i < model->inputs.size(); ++i) {
      if (model->inputs[i].name == name) {
        *out = static_cast<int32_t>(i);
        return;
      }
      names += (i ? ", " : "") + model->inputs[i].name;
    }
    Fail(LWC_ERR_INVALID_ARGUMENT, std::string("no input named '") + name + "'; the model's inputs: " + names);
  });
}

lwc_status lwc_model_set_input(lwc_model* model, int32_t index, lwc_dtype dtype, int32_t ndim,
                               const int64_t* shape, const void* data, size_t nbytes) {
  return Guard([&] {
    CheckLive(model);
    CheckIndex(index, model->inputs.size(), "input");
    const TensorSpec& spec = model->inputs[index];
    if (dtype != spec.dtype) {
      Fail(LWC_ERR_DTYPE_MISMATCH, "input '" + spec.name + "' has dtype " +
                                       lwc_dtype_name(spec.dtype) + ", got " + lwc_dtype_name(dtype));
    }
    if (ndim < 0) Fail(LWC_ERR_SHAPE_MISMATCH, "input '" + spec.name + "': ndim is negative");
    if (ndim > 0) NotNull(shape, "shape");
    std::vector<int64_t> given(shape, shape + ndim);
    if (!spec.dynamic()) {
      if (static_cast<size_t>(ndim) != spec.shape.size() ||
          (ndim > 0 && std::memcmp(shape, spec.shape.data(), sizeof(int64_t) * ndim) != 0)) {
        Fail(LWC_ERR_SHAPE_MISMATCH, "input '" + spec.name + "' has shape " + ShapeText(shape, ndim) +
                                         ", the model was compiled for " +
                                         ShapeText(spec.shape.data(), static_cast<int64_t>(spec.shape.size())));
      }
    } else {
      CheckDynamicShape(*model, index, given);
    }
    size_t need = spec.dynamic() ? SizeOf(given, spec.dtype) : spec.nbytes;
    if (nbytes != need) {
      Fail(LWC_ERR_SIZE_MISMATCH, "input '" + spec.name + "' needs " + std::to_string(need) +
                                      " bytes, got " + std::to_string(nbytes));
    }
    if (nbytes > 0) NotNull(data, "data");
    std::vector<int64_t> alloc_shape = spec.dynamic() ? given : spec.shape;
    if (model->input_tensors[index].has_value()) {
      const DLTensor& t = *model->input_tensors[index].value().GetDLTensorPtr();
      if (std::vector<int64_t>(t.shape, t.shape + t.ndim) != alloc_shape) {
        model->input_tensors[index] = ffi::Optional<ffi::Tensor>();
      }
    }
    if (!model->input_tensors[index].has_value()) {
      model->input_tensors[index] = ffi::Tensor::FromNDAlloc(
          CPUAlloc(), ffi::Shape(alloc_shape), FindDtype(spec.dtype)->dl, DLDevice{kDLCPU, 0});
    }
    std::memcpy(model->input_tensors[index].value().data_ptr(), data, nbytes);
    model->input_set[index] = true;
  });
}

lwc_status lwc_model_run(lwc_model* model) {
  return Guard([&] {
    CheckLive(model);
    for (size_t i = 0; i < model->inputs.size(); ++i) {
      if (!model->input_set[i]) {
        Fail(LWC_ERR_NOT_READY, "input '" + model->inputs[i].name + "' was not set (lwc_model_set_input)");
      }
    }
    model->output_tensors.clear();
    std::vector<ffi::Tensor> inputs;
    for (const ffi::Optional<ffi::Tensor>& t : model->input_tensors) inputs.push_back(t.value());
    std::vector<ffi::AnyView> args(inputs.begin(), inputs.end());
    ffi::Any result;
    model->main_fn.CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);
    std::vector<ffi::Tensor> outs;
    Flatten(result, 0, &outs);
    if (outs.size() != model->outputs.size()) {
      Fail(LWC_ERR_RUNTIME, "model returned " + std::to_string(outs.size()) + " outputs, the manifest lists " +
                                std::to_string(model->outputs.size()));
    }
    for (size_t i = 0; i < outs.size(); ++i) {
      const DLTensor& t = *outs[i].GetDLTensorPtr();
      const DtypeEntry* e = FindDtype(t.dtype);
      if (t.device.device_type != kDLCPU || !ffi::IsContiguous(t) || e == nullptr ||
          e->dtype != model->outputs[i].dtype) {
        Fail(LWC_ERR_RUNTIME, "output '" + model->outputs[i].name +
                                  "' is not a contiguous CPU tensor of the manifest's dtype");
      }
      model->output_shapes[i].assign(t.shape, t.shape + t.ndim);
    }
    model->output_tensors = std::move(outs);
  });
}

lwc_status lwc_model_borrow_output(const lwc_model* model, int32_t index, const void** data,
                                   lwc_tensor_info* info) {
  return Guard([&] {
    CheckLive(model);
    NotNull(data, "data");
    CheckIndex(index, model->outputs.size(), "output");
    if (model->output_tensors.empty()) Fail(LWC_ERR_NOT_READY, "no output yet: call lwc_model_run first");
    const DLTensor& t = *model->output_tensors[index].GetDLTensorPtr();
    *data = static_cast<const char*>(t.data) + t.byte_offset;
    if (info != nullptr) FillInfo(model->outputs[index], model->output_shapes[index], info);
  });
}

lwc_status lwc_model_get_output(const lwc_model* model, int32_t index, void* dst, size_t dst_nbytes) {
  return Guard([&] {
    CheckLive(model);
    NotNull(dst, "dst");
    CheckIndex(index, model->outputs.size(), "output");
    if (model->output_tensors.empty()) Fail(LWC_ERR_NOT_READY, "no output yet: call lwc_model_run first");
    const DLTensor& t = *model->output_tensors[index].GetDLTensorPtr();
    size_t n = ffi::GetDataSize(t);
    if (dst_nbytes < n) {
      Fail(LWC_ERR_SIZE_MISMATCH, "output '" + model->outputs[index].name + "' has " + std::to_string(n) +
                                      " bytes, the buffer " + std::to_string(dst_nbytes));
    }
    std::memcpy(dst, static_cast<const char*>(t.data) + t.byte_offset, n);
  });
}

}  // extern "C"

// ---------------------------------------------------------------- libstdc++ versions
// The boards run older libstdc++ than the g++ 12 that builds this file: Ubuntu 18.04
// (JetPack 4.6) has GLIBCXX_3.4.25, Ubuntu 20.04 and Raspberry Pi OS bullseye 3.4.28. Two
// symbols would raise the requirement: std::__throw_bad_array_new_length
// (GLIBCXX_3.4.29, called by GCC >= 11's std::allocator) and basic_ostringstream's default
// constructor (GLIBCXX_3.4.26, used by tvm-ffi's headers). Both are defined here, and
// lwc_runtime.map keeps every non-lwc_ symbol local, so the library binds its own copies
// and needs GLIBCXX_3.4.21 at most (lwc.audit checks every bundle). Linking libstdc++
// statically instead would pull in glibc 2.32-2.36 symbols (arc4random, pthread_once).
#if defined(__GLIBCXX__) && defined(__GNUC__) && __GNUC__ >= 11
namespace std {
void __throw_bad_array_new_length() { throw bad_array_new_length(); }
}  // namespace std
#endif
#if defined(__GLIBCXX__)
template std::ostringstream::basic_ostringstream();
#endif
