"""Load and run an exported artifact (``NAME.so`` + manifest ``NAME.json``).

Host artifacts run in-process on TVM's Relax VM; aarch64 artifacts on an x86 machine run
under qemu-aarch64 through :mod:`lwc.cross_runtime`. Before anything is loaded the
manifest's recorded versions are compared with the running runtime (case F4): a module
built against one tvm-ffi and loaded with another can crash silently, so a mismatch is
refused with a message.
"""

from __future__ import annotations

import json
import platform
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lwc.errors import LwcError

_RUNTIME_PACKAGES = ("apache-tvm", "apache-tvm-ffi")


def read_manifest(path: str | Path) -> dict:
    """The manifest beside ``path`` (``x.so`` -> ``x.json``).

    Raises:
        LwcError: artifact or manifest missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise LwcError(f"artifact {str(path)!r} not found")
    manifest = path.with_suffix(".json")
    if not manifest.is_file():
        raise LwcError(
            f"manifest {manifest.name} not found beside {path.name}; lwc artifacts are "
            "NAME.so plus NAME.json (recompile with `lwc compile`)"
        )
    try:
        return json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise LwcError(f"manifest {manifest.name} is unreadable: {err}") from None


def check_versions(manifest: dict, runtime: dict[str, str] | None = None) -> None:
    """Refuse to load an artifact built with other TVM runtime versions (case F4).

    Args:
        runtime: the runtime's versions; defaults to the installed packages.
    Raises:
        LwcError: naming the package, the version the artifact was built with and the
            version present.
    """
    from lwc import tvm_compat

    runtime = runtime or tvm_compat.versions()
    built = manifest.get("versions", {})
    for pkg in _RUNTIME_PACKAGES:
        want, have = built.get(pkg), runtime.get(pkg)
        if want is None:
            raise LwcError(f"manifest records no {pkg} version; refusing to load (recompile)")
        if want != have:
            raise LwcError(
                f"artifact was built with {pkg} {want} but this runtime has {have}; "
                f"loading it could crash: install {pkg}=={want} or recompile the model"
            )


def random_inputs(specs: list[dict], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for manifest input specs.

    Floats ~ N(0, 1) (what a mean/std-normalised image or feature looks like), ints in
    [0, 10), bools fair coin flips. A symbolic dim takes the low end of its range
    (:func:`example_shape`).
    """
    rng = np.random.default_rng(seed)
    out = {}
    for spec in specs:
        dtype = np.dtype(spec["dtype"])
        shape = example_shape(spec)
        if dtype.kind == "f":
            out[spec["name"]] = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
        elif dtype.kind == "b":
            out[spec["name"]] = rng.integers(0, 2, shape).astype(dtype)
        else:
            out[spec["name"]] = rng.integers(0, 10, shape).astype(dtype)
    return out


def example_shape(spec: dict) -> tuple:
    """A shape the manifest input ``spec`` accepts: its own, symbolic dims at the low end
    of their range (manifest ``"dims": {symbol: [lo, hi]}``)."""
    ranges = spec.get("dims") or {}
    return tuple(ranges[d][0] if isinstance(d, str) else d for d in spec["shape"])


def accepted_text(spec: dict) -> str:
    """The shapes a manifest input accepts, in words: ``[1, 3, 48, W] with W in 96..1280``."""
    shape = "[" + ", ".join(str(d) for d in spec["shape"]) + "]"
    ranges = spec.get("dims") or {}
    if not ranges:
        return shape
    return shape + " with " + ", ".join(f"{sym} in {lo}..{hi}" for sym, (lo, hi) in ranges.items())


def check_shape(spec: dict, shape: tuple, bound: dict[str, tuple[int, str]]) -> None:
    """Check an input's shape against its manifest spec; symbolic dims against their range.

    Args:
        spec: the manifest input (``name``, ``shape``, optional ``dims`` ranges).
        shape: the given array's shape.
        bound: symbol -> (value, input name) seen so far in this call; updated (a symbol
            shared by two inputs must take one value).
    Raises:
        LwcError: one line naming the input, the dim and what the artifact accepts.
    """
    name, want = spec["name"], list(spec["shape"])
    ranges = spec.get("dims") or {}
    if not ranges:
        if list(shape) != want:
            raise LwcError(f"input {name!r} has shape {list(shape)}, the artifact was "
                           f"compiled for {spec['shape']}")
        return
    accepts = accepted_text(spec)
    if len(shape) != len(want):
        raise LwcError(f"input {name!r} has shape {list(shape)} (rank {len(shape)}); the "
                       f"artifact accepts {accepts}")
    for axis, (have, dim) in enumerate(zip(shape, want)):
        if not isinstance(dim, str):
            if have != dim:
                raise LwcError(f"input {name!r} dim {axis} is {have}, the artifact accepts only "
                               f"{dim} there: {accepts}")
            continue
        lo, hi = ranges[dim]
        if not lo <= have <= hi:
            raise LwcError(f"input {name!r} dim {axis} ({dim}) is {have}, outside the accepted "
                           f"range {lo}..{hi}: the artifact accepts {accepts}")
        seen = bound.setdefault(dim, (have, name))
        if seen[0] != have:
            raise LwcError(f"input {name!r} dim {axis} ({dim}) is {have}, but {dim} is "
                           f"{seen[0]} in input {seen[1]!r}: the artifact accepts {accepts}")


@dataclass
class Artifact:
    """A loaded artifact: its path and manifest; :meth:`run` executes it."""

    path: Path
    manifest: dict
    #: the VM :meth:`run` reuses (created on first run: a VM copies the weights in)
    _vm: object = field(default=None, repr=False, compare=False)
    #: a Relax VM runs one call at a time (its registers are per VM): threads sharing
    #: this artifact take turns on it
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def inputs(self) -> list[dict]:
        return self.manifest["inputs"]

    @property
    def outputs(self) -> list[dict]:
        return self.manifest["outputs"]

    @property
    def is_dynamic(self) -> bool:
        """Some input dim takes a range of values (manifest ``"dims"``)."""
        return any(spec.get("dims") for spec in self.inputs)

    def accepts(self) -> dict[str, str]:
        """What each input accepts, in words: ``{"x": "[1, 3, 48, W] with W in 96..1280"}``."""
        return {spec["name"]: accepted_text(spec) for spec in self.inputs}

    @property
    def arch(self) -> str:
        return self.manifest["target"]["arch"]

    @property
    def runs_natively(self) -> bool:
        kind = self.manifest["target"]["tvm"].get("kind")
        return self.arch == platform.machine() and (kind == "llvm" or (kind == "cuda" and _have_gpu()))

    @property
    def device(self):
        """The TVM device the artifact's kernels run on (CPU, or CUDA GPU 0)."""
        from lwc import tvm_compat

        is_cuda = self.manifest["target"]["tvm"].get("kind") == "cuda"
        return tvm_compat.cuda_device() if is_cuda else None

    def check_inputs(self, inputs: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
        """Inputs in manifest order, converted and checked.

        Raises:
            LwcError: unknown input name, missing input, or wrong shape (a fixed dim that
                differs, a symbolic dim outside its range: :func:`check_shape`).
        """
        names = [s["name"] for s in self.inputs]
        inputs = _without_bound(inputs, self.manifest.get("bound_inputs") or {})
        extra = sorted(set(inputs) - set(names))
        if extra:
            raise LwcError(f"unknown input(s) {', '.join(extra)}; the model's inputs: {', '.join(names)}")
        ordered = []
        bound: dict = {}
        for spec in self.inputs:
            if spec["name"] not in inputs:
                raise LwcError(f"input {spec['name']!r} is missing")
            # np.asarray(order="C"), not ascontiguousarray: that makes a 0-d array 1-d
            array = np.asarray(inputs[spec["name"]], order="C")
            check_shape(spec, array.shape, bound)
            if array.dtype != np.dtype(spec["dtype"]):
                if array.dtype.kind != np.dtype(spec["dtype"]).kind:
                    raise LwcError(
                        f"input {spec['name']!r} has dtype {array.dtype}, expected {spec['dtype']}"
                    )
                array = array.astype(spec["dtype"])
            ordered.append((spec["name"], array))
        return ordered

    def run(
        self, inputs: dict[str, np.ndarray] | None = None, seed: int = 0
    ) -> list[np.ndarray]:
        """Run once. Inputs not given get :func:`random_inputs` data (seeded).

        Returns:
            outputs in manifest order.
        Raises:
            LwcError: bad inputs, or the artifact cannot run on this machine.
        """
        outputs, _ = self.timed_run(inputs, seed=seed)
        return outputs

    def full_inputs(self, inputs: dict[str, np.ndarray] | None, seed: int = 0) -> dict:
        given = dict(inputs or {})
        missing = [s for s in self.inputs if s["name"] not in given]
        given.update(random_inputs(missing, seed))
        return given

    def timed_run(
        self, inputs: dict[str, np.ndarray] | None = None, *, repeat: int = 0, seed: int = 0
    ) -> tuple[list[np.ndarray], float | None]:
        """Run once, then ``repeat`` more times timed; returns (outputs, mean ms or None)."""
        ordered = self.check_inputs(self.full_inputs(inputs, seed))
        if self.runs_natively:
            return self._run_in_process(ordered, repeat)
        if self.arch == "aarch64":
            from lwc import cross_runtime

            return cross_runtime.run_aarch64(self.path, ordered, repeat=repeat)
        raise LwcError(
            f"{self.path.name} is a {self.manifest['target']['preset']} artifact "
            f"({self.arch}, {self.manifest['target']['tvm'].get('kind')}); this machine "
            f"({platform.machine()}) cannot run it"
        )

    def _run_in_process(self, ordered, repeat: int) -> tuple[list[np.ndarray], float | None]:
        from lwc import tvm_compat

        args = [tvm_compat.tensor(a, self.device) for _, a in ordered]
        with self._lock:
            if self._vm is None:  # loading copies every weight into the VM: once per artifact
                self._vm = self.vm()
            vm = self._vm
            try:
                result = vm["main"](*args)
            except Exception as err:  # TVM's errors: one line, no trace
                if not self.is_dynamic:
                    raise
                raise LwcError(f"{self.path.name} failed on input shapes "
                               f"{[list(a.shape) for _, a in ordered]} (accepted: "
                               f"{self.accepts()}): {_last_line(err)}") from None
            outputs = [np.asarray(t.numpy()) for t in _flatten(result)]
            mean_ms = None
            if repeat > 0:
                start = time.perf_counter()
                for _ in range(repeat):
                    vm["main"](*args)
                mean_ms = (time.perf_counter() - start) * 1e3 / repeat
        return outputs, mean_ms

    def vm(self):
        """A Relax VM over this artifact (host artifacts only)."""
        from lwc import tvm_compat

        try:
            lib = tvm_compat.load_module(str(self.path))
        except Exception as err:
            raise LwcError(f"cannot load {self.path.name}: {str(err).splitlines()[-1]}") from None
        return tvm_compat.virtual_machine(lib, self.device)


def _without_bound(inputs: dict, bound: dict) -> dict:
    """``inputs`` less those bound at compile time (``--input-value``, manifest
    ``bound_inputs``): a feed written for onnxruntime may carry them, with the same value.

    Raises:
        LwcError: a bound input given with another value.
    """
    for name in set(inputs) & set(bound):
        if not np.array_equal(np.asarray(inputs[name]), np.asarray(bound[name])):
            raise LwcError(f"input {name!r} was bound to {bound[name]} at compile time (--input-value); "
                           f"this artifact cannot take {np.asarray(inputs[name]).tolist()}")
    return {k: v for k, v in inputs.items() if k not in bound}


def _last_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[-1] if lines else type(err).__name__


def _have_gpu() -> bool:
    from lwc import cuda

    return cuda.gpu_available()


def _flatten(result) -> list:
    if hasattr(result, "numpy"):
        return [result]
    out = []
    for item in result:
        out.extend(_flatten(item))
    return out


def load(path: str | Path) -> Artifact:
    """Read the manifest, check runtime versions (case F4) and return the artifact.

    Raises:
        LwcError: missing files, unreadable manifest or a version mismatch.
    """
    manifest = read_manifest(path)
    check_versions(manifest)
    return Artifact(Path(path), manifest)
