"""clapp from Python: the host API of libclapp (include/clapp/clapp.h) through
ctypes, numpy arrays in and out. No compiler is needed at import.

    import clapp
    p = clapp.Pipeline("pipelines/audio_clapp.pipe", checkpoint="clapp.safetensors")
    feats = p.extract(samples, 16000, element="conv5")    # (frames, channels)

Pipeline(text_or_path, **overrides): pipeline text or a .pipe file, with
--set style overrides given as keyword arguments, NAME__KEY=VALUE meaning
NAME.KEY=VALUE (or overrides={"NAME.KEY": VALUE}).

libclapp is looked up in $CLAPP_LIBRARY, then beside the installed package
(the prefix's library folder), then on the loader's path.
"""
import ctypes
import json
import os
import struct
import tempfile

import numpy as np

try:
    from . import _config
except ImportError:  # running from the source tree
    _config = None

__all__ = ["Pipeline", "ClappError", "read_checkpoint", "checkpoint_metadata", "version", "elements",
           "LOG_ERROR", "LOG_WARNING", "LOG_INFO", "LOG_DEBUG"]

LOG_ERROR, LOG_WARNING, LOG_INFO, LOG_DEBUG = 0, 1, 2, 3
_KIND_LAYER, _KIND_SINK, _KIND_SOURCE, _KIND_LOSS = 0, 1, 2, 3
_MAX_DIMS = 6


class ClappError(RuntimeError):
    """A failed call: .status is the CLAPP_E_* code, the message names the cause."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


# ---- the C structures (clapp/tensor.h, clapp/clapp.h) --------------------------

_LOG_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p)


class _Options(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("seed", ctypes.c_uint64), ("learn", ctypes.c_int),
                ("lr", ctypes.c_double), ("adam_eps", ctypes.c_double), ("adam_beta1", ctypes.c_double),
                ("adam_beta2", ctypes.c_double), ("warmup", ctypes.c_int64), ("clip", ctypes.c_double),
                ("weight_decay", ctypes.c_double), ("diag_every", ctypes.c_int64),
                ("log_level", ctypes.c_int), ("log", _LOG_FN), ("log_user", ctypes.c_void_p)]


class _Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.POINTER(ctypes.c_float)), ("ndim", ctypes.c_int32),
                ("shape", ctypes.c_int64 * _MAX_DIMS)]


class _Lane(ctypes.Structure):
    _fields_ = [("seq_id", ctypes.c_int64), ("seq_name", ctypes.c_char_p), ("flags", ctypes.c_uint32),
                ("len", ctypes.c_int32), ("pts", ctypes.c_int64), ("class_label", ctypes.c_int32),
                ("labels", ctypes.POINTER(ctypes.c_int32)), ("n_labels", ctypes.c_int32),
                ("label_pts", ctypes.c_int64)]


class _Block(ctypes.Structure):
    _fields_ = [("x", _Tensor), ("lanes", ctypes.c_int32), ("lane", ctypes.POINTER(_Lane)),
                ("rate", ctypes.c_double), ("label_rate", ctypes.c_double)]


class _StreamInfo(ctypes.Structure):
    _fields_ = [("ndim", ctypes.c_int32), ("shape", ctypes.c_int64 * _MAX_DIMS), ("rate", ctypes.c_double)]


class _LossInfo(ctypes.Structure):
    _fields_ = [("last", ctypes.c_double), ("last_pairs", ctypes.c_int64), ("mean", ctypes.c_double),
                ("count", ctypes.c_int64)]


class _RunInfo(ctypes.Structure):
    _fields_ = [("blocks", ctypes.c_int64), ("steps", ctypes.c_int64), ("files_done", ctypes.c_int32),
                ("files_failed", ctypes.c_int32), ("lr_scale", ctypes.c_double), ("diag_seconds", ctypes.c_double),
                ("files", ctypes.c_int32), ("aligned_files", ctypes.c_int32)]


class _ParamDesc(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("type", ctypes.c_int), ("default", ctypes.c_char_p),
                ("min", ctypes.c_double), ("max", ctypes.c_double), ("choices", ctypes.c_char_p),
                ("help", ctypes.c_char_p)]


class _PluginDesc(ctypes.Structure):
    """The leading fields of clapp_plugin_desc (clapp/plugin.h) that describe an element."""
    _fields_ = [("struct_size", ctypes.c_uint32), ("id", ctypes.c_char_p), ("version", ctypes.c_char_p),
                ("kind", ctypes.c_int), ("help", ctypes.c_char_p), ("params", ctypes.POINTER(_ParamDesc)),
                ("n_params", ctypes.c_int32)]


def _load_library():
    candidates = []
    if os.environ.get("CLAPP_LIBRARY"):
        candidates.append(os.environ["CLAPP_LIBRARY"])
    if _config is not None:
        here = os.path.dirname(os.path.abspath(__file__))
        candidates.append(os.path.normpath(os.path.join(here, _config.LIBDIR_FROM_PACKAGE, _config.SONAME)))
    candidates += ["libclapp.so.0", "libclapp.so"]
    errors = []
    for c in candidates:
        try:
            return ctypes.CDLL(c)
        except OSError as e:
            errors.append(f"{c}: {e}")
    raise ImportError("clapp: cannot load libclapp (set CLAPP_LIBRARY to its path): " + "; ".join(errors))


_lib = _load_library()
_P = ctypes.c_void_p
_sigs = {
    "clapp_version": (ctypes.c_char_p, []),
    "clapp_status_string": (ctypes.c_char_p, [ctypes.c_int]),
    "clapp_options_init": (None, [ctypes.POINTER(_Options)]),
    "clapp_free": (None, [ctypes.c_void_p]),
    "clapp_pipeline_create_from_text": (ctypes.c_int, [ctypes.POINTER(_P), ctypes.c_char_p,
                                                      ctypes.POINTER(ctypes.c_char_p), ctypes.c_int,
                                                      ctypes.POINTER(_Options)]),
    "clapp_pipeline_create_from_file": (ctypes.c_int, [ctypes.POINTER(_P), ctypes.c_char_p,
                                                      ctypes.POINTER(ctypes.c_char_p), ctypes.c_int,
                                                      ctypes.POINTER(_Options)]),
    "clapp_pipeline_text": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_void_p)]),
    "clapp_pipeline_element_count": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_int)]),
    "clapp_pipeline_element": (ctypes.c_int, [_P, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p),
                                              ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_int)]),
    "clapp_pipeline_open_manifest": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_int]),
    "clapp_pipeline_open_push": (ctypes.c_int, [_P, ctypes.c_int32]),
    "clapp_pipeline_begin": (ctypes.c_int, [_P, ctypes.c_int32, ctypes.c_char_p, ctypes.c_double]),
    "clapp_pipeline_push": (ctypes.c_int, [_P, ctypes.c_int32, ctypes.POINTER(ctypes.c_float), ctypes.c_int64]),
    "clapp_pipeline_end": (ctypes.c_int, [_P, ctypes.c_int32]),
    "clapp_pipeline_step": (ctypes.c_int, [_P]),
    "clapp_pipeline_output": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.POINTER(ctypes.POINTER(_Block))]),
    "clapp_pipeline_stream": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.POINTER(_StreamInfo)]),
    "clapp_pipeline_finish": (ctypes.c_int, [_P]),
    "clapp_pipeline_set_learning": (ctypes.c_int, [_P, ctypes.c_int]),
    "clapp_pipeline_save": (ctypes.c_int, [_P, ctypes.c_char_p]),
    "clapp_pipeline_load": (ctypes.c_int, [_P, ctypes.c_char_p]),
    "clapp_pipeline_resume": (ctypes.c_int, [_P, ctypes.c_char_p]),
    "clapp_pipeline_report": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]),
    "clapp_pipeline_loss": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.POINTER(_LossInfo)]),
    "clapp_pipeline_run_info": (ctypes.c_int, [_P, ctypes.POINTER(_RunInfo)]),
    "clapp_pipeline_error": (ctypes.c_char_p, [_P]),
    "clapp_catalog_create": (ctypes.c_int, [ctypes.POINTER(_P), ctypes.POINTER(_Options)]),
    "clapp_catalog_count": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_int)]),
    "clapp_catalog_element": (ctypes.c_int, [_P, ctypes.c_int, ctypes.POINTER(ctypes.POINTER(_PluginDesc)),
                                             ctypes.POINTER(ctypes.c_char_p)]),
    "clapp_catalog_error": (ctypes.c_char_p, [_P]),
    "clapp_catalog_destroy": (None, [_P]),
    "clapp_pipeline_destroy": (None, [_P]),
}
for _name, (_res, _args) in _sigs.items():
    _f = getattr(_lib, _name)
    _f.restype = _res
    _f.argtypes = _args


def version():
    """The library's version, "MAJOR.MINOR.PATCH"."""
    return _lib.clapp_version().decode()


_KINDS = {_KIND_LAYER: "layer", _KIND_SINK: "sink", _KIND_SOURCE: "source", _KIND_LOSS: "loss"}
_PARAM_TYPES = {0: "int", 1: "float", 2: "bool", 3: "string", 4: "enum"}


def elements():
    """Every element the library can build (built-ins and the plugins it finds):
    a list of dicts {id, version, kind, help, file, params: [{name, type,
    default, min, max, choices, help}]}; file is None for built-ins."""
    opt = _Options()
    _lib.clapp_options_init(ctypes.byref(opt))
    c = _P()
    try:
        n = ctypes.c_int()
        rc = _lib.clapp_catalog_create(ctypes.byref(c), ctypes.byref(opt))
        if rc == 0:
            rc = _lib.clapp_catalog_count(c, ctypes.byref(n))
        if rc < 0:
            raise ClappError(rc, _lib.clapp_catalog_error(c).decode(errors="replace"))
        out = []
        for i in range(n.value):
            d, f = ctypes.POINTER(_PluginDesc)(), ctypes.c_char_p()
            rc = _lib.clapp_catalog_element(c, i, ctypes.byref(d), ctypes.byref(f))
            if rc < 0:
                raise ClappError(rc, _lib.clapp_catalog_error(c).decode(errors="replace"))
            d = d.contents
            dec = lambda b: b.decode() if b is not None else None  # noqa: E731
            params = []
            for k in range(d.n_params):
                p = d.params[k]
                params.append({"name": dec(p.name), "type": _PARAM_TYPES.get(p.type, "?"),
                               "default": dec(p.default), "min": p.min, "max": p.max,
                               "choices": dec(p.choices).split("|") if p.choices else None,
                               "help": dec(p.help)})
            out.append({"id": dec(d.id), "version": dec(d.version), "kind": _KINDS.get(d.kind, "?"),
                        "help": dec(d.help), "file": dec(f.value), "params": params})
        return out
    finally:
        _lib.clapp_catalog_destroy(c)


def _b(s):
    return s.encode() if isinstance(s, str) else s


class _Handle:
    """One clapp_pipeline: created, opened once, destroyed."""

    def __init__(self, text_or_path, overrides, seed, learn, lr, log_level):
        opt = _Options()
        _lib.clapp_options_init(ctypes.byref(opt))
        opt.seed = seed
        opt.learn = 1 if learn else 0
        if lr is not None:
            opt.lr = lr
        opt.log_level = log_level
        sets = (ctypes.c_char_p * max(1, len(overrides)))(*[_b(s) for s in overrides])
        self.p = _P()
        is_file = os.path.exists(text_or_path) and "!" not in text_or_path and "\n" not in text_or_path
        create = _lib.clapp_pipeline_create_from_file if is_file else _lib.clapp_pipeline_create_from_text
        rc = create(ctypes.byref(self.p), _b(text_or_path), sets, len(overrides), ctypes.byref(opt))
        self.check(rc)

    def check(self, rc):
        if rc < 0:
            msg = _lib.clapp_pipeline_error(self.p).decode(errors="replace")
            status = _lib.clapp_status_string(rc).decode()
            raise ClappError(rc, f"{msg} ({status})")
        return rc

    def close(self):
        if self.p:
            _lib.clapp_pipeline_destroy(self.p)
            self.p = _P()

    def __del__(self):
        try:
            self.close()
        except Exception:   # interpreter shutdown: the library may be gone already
            pass

    def elements(self):
        n = ctypes.c_int()
        self.check(_lib.clapp_pipeline_element_count(self.p, ctypes.byref(n)))
        out = []
        for i in range(n.value):
            name, typ, kind = ctypes.c_char_p(), ctypes.c_char_p(), ctypes.c_int()
            self.check(_lib.clapp_pipeline_element(self.p, i, ctypes.byref(name), ctypes.byref(typ),
                                                   ctypes.byref(kind)))
            out.append((name.value.decode(), typ.value.decode(), kind.value))
        return out

    def stream(self, element):
        si = _StreamInfo()
        self.check(_lib.clapp_pipeline_stream(self.p, _b(element), ctypes.byref(si)))
        return tuple(si.shape[:si.ndim]), si.rate

    def push(self, lane, frames):
        arr = np.ascontiguousarray(frames, dtype=np.float32)
        n = arr.shape[0] if arr.ndim > 0 else 0
        self.check(_lib.clapp_pipeline_push(self.p, lane, arr.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), n))

    def lane_frames(self, element, lane):
        """The valid frames of one lane in the last block: (len, C) or (len, C, H, W)."""
        blk = ctypes.POINTER(_Block)()
        self.check(_lib.clapp_pipeline_output(self.p, _b(element), ctypes.byref(blk)))
        b = blk.contents
        shape = tuple(b.x.shape[:b.x.ndim])
        x = np.ctypeslib.as_array(b.x.data, shape=shape)
        n = b.lane[lane].len
        # [B, C, T, ...] -> lane's (T, C, ...), copied out of the library's block
        return np.moveaxis(x[lane, :, :n], 1, 0).copy()


def _overrides(kw, extra):
    sets = []
    for k, v in (extra or {}).items():
        sets.append(f"{k}={_text(v)}")
    for k, v in kw.items():
        if "__" not in k:
            raise TypeError(f"override {k}=...: write NAME__KEY=VALUE for NAME.KEY=VALUE")
        name, key = k.split("__", 1)
        sets.append(f"{name}.{key}={_text(v)}")
    return sets


def _text(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


class Pipeline:
    """A pipeline description, run on arrays, streams and manifests.

    Each extract() and train() runs its own pipeline instance; push()/pull()
    share one streaming instance (frozen), created at the first push. Weights
    come from `checkpoint` (or load()/train()), else the seeded random
    initialisation.
    """

    def __init__(self, text_or_path, *, seed=1, checkpoint=None, lanes=1, log_level=LOG_WARNING,
                 overrides=None, **kw):
        self.source = os.fspath(text_or_path)
        self.seed = seed
        self.lanes = lanes
        self.log_level = log_level
        self.overrides = _overrides(kw, overrides)
        self.checkpoint = None
        self._stream = None
        self._tmp = None
        probe = self._handle(learn=False)   # check the text and overrides now
        self.elements = probe.elements()
        probe.close()
        if checkpoint is not None:
            self.load(checkpoint)

    # -- helpers --
    def _handle(self, learn, lr=None):
        return _Handle(self.source, self.overrides, self.seed, learn, lr, self.log_level)

    def _default_element(self):
        layers = [n for n, _, k in self.elements if k == _KIND_LAYER]
        return layers[-1] if layers else self.elements[0][0]

    def text(self):
        """The resolved pipeline, every default filled in."""
        h = self._handle(learn=False)
        ptr = ctypes.c_void_p()
        h.check(_lib.clapp_pipeline_text(h.p, ctypes.byref(ptr)))
        s = ctypes.string_at(ptr).decode()
        _lib.clapp_free(ptr)
        h.close()
        return s

    def load(self, checkpoint):
        """Use the weights of a checkpoint from now on (checked now)."""
        h = self._handle(learn=False)
        h.check(_lib.clapp_pipeline_open_push(h.p, 1))
        h.check(_lib.clapp_pipeline_load(h.p, _b(os.fspath(checkpoint))))
        h.close()
        self.checkpoint = os.fspath(checkpoint)
        self.close()
        return self

    # -- whole arrays --
    def extract(self, array, rate, element=None):
        """Features of one signal: audio samples (n,) or video frames (n, C, H, W)
        at `rate` (Hz or fps, the source's), through the pipeline with learning
        off. Returns element's output, one row per time step: (T, C) or (T, C, H, W).
        Default element: the last layer. A dict when element is a list."""
        names = [element] if isinstance(element, str) or element is None else list(element)
        names = [n if n is not None else self._default_element() for n in names]
        h = self._handle(learn=False)
        try:
            h.check(_lib.clapp_pipeline_open_push(h.p, 1))
            if self.checkpoint:
                h.check(_lib.clapp_pipeline_load(h.p, _b(self.checkpoint)))
            h.check(_lib.clapp_pipeline_begin(h.p, 0, b"array", float(rate)))
            h.push(0, array)
            h.check(_lib.clapp_pipeline_end(h.p, 0))
            parts = {n: [] for n in names}
            while h.check(_lib.clapp_pipeline_step(h.p)) == 1:
                for n in names:
                    parts[n].append(h.lane_frames(n, 0))
            h.check(_lib.clapp_pipeline_finish(h.p))
            out = {n: self._concat(h, n, parts[n]) for n in names}
        finally:
            h.close()
        return out[names[0]] if isinstance(element, str) or element is None else out

    @staticmethod
    def _concat(h, name, parts):
        if parts:
            return np.concatenate(parts, axis=0)
        shape, _ = h.stream(name)
        return np.zeros((0,) + tuple(shape[1:2]) + tuple(shape[3:]), dtype=np.float32)

    # -- learning --
    def train(self, manifest, epochs=1, checkpoint=None, resume=False, lr=None):
        """Learn over the files of a manifest `epochs` times; the weights are
        saved to `checkpoint` (a temporary file if None) and used from then
        on. resume=True continues the training in `checkpoint`. Returns
        {"blocks", "loss": {element: mean loss}, "files_failed"}."""
        if checkpoint is None:
            if resume:
                raise ValueError("resume=True needs the checkpoint to continue from")
            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="clapp-")
            checkpoint = os.path.join(self._tmp.name, "trained.safetensors")
        checkpoint = os.fspath(checkpoint)
        h = self._handle(learn=True, lr=lr)
        try:
            h.check(_lib.clapp_pipeline_open_manifest(h.p, _b(os.fspath(manifest)), int(epochs)))
            if resume:
                h.check(_lib.clapp_pipeline_resume(h.p, _b(checkpoint)))
            elif self.checkpoint:
                h.check(_lib.clapp_pipeline_load(h.p, _b(self.checkpoint)))
            while h.check(_lib.clapp_pipeline_step(h.p)) == 1:
                pass
            h.check(_lib.clapp_pipeline_finish(h.p))
            h.check(_lib.clapp_pipeline_save(h.p, _b(checkpoint)))
            losses = {}
            for n, _, k in self.elements:
                if k == _KIND_LOSS:
                    li = _LossInfo()
                    h.check(_lib.clapp_pipeline_loss(h.p, _b(n), ctypes.byref(li)))
                    losses[n] = li.mean
            ri = _RunInfo()
            h.check(_lib.clapp_pipeline_run_info(h.p, ctypes.byref(ri)))
        finally:
            h.close()
        self.checkpoint = checkpoint
        self.close()
        return {"blocks": ri.blocks, "loss": losses, "files_failed": ri.files_failed}

    # -- streaming --
    def _streaming(self):
        if self._stream is None:
            h = self._handle(learn=False)
            try:
                h.check(_lib.clapp_pipeline_open_push(h.p, int(self.lanes)))
                if self.checkpoint:
                    h.check(_lib.clapp_pipeline_load(h.p, _b(self.checkpoint)))
            except ClappError:
                h.close()
                raise
            self._stream = h
            self._open = [False] * int(self.lanes)
            self._rate = h.stream(self.elements[0][0])[1]
        return self._stream

    def push(self, frames, lane=0, rate=None, name="stream"):
        """Append frames to the stream on `lane` (starting one if none is open):
        audio samples (n,) or video frames (n, C, H, W) at the source's rate."""
        h = self._streaming()
        if not self._open[lane]:
            h.check(_lib.clapp_pipeline_begin(h.p, lane, _b(name), float(rate or self._rate)))
            self._open[lane] = True
        h.push(lane, frames)

    def end(self, lane=0):
        """The stream on `lane` has ended: its last frames become pullable."""
        h = self._streaming()
        h.check(_lib.clapp_pipeline_end(h.p, lane))
        self._open[lane] = False

    def pull(self, element=None, lane=0):
        """Process every block that is ready and return element's frames of
        `lane` from them, (T, C) or (T, C, H, W); T may be 0. A stream that
        has not ended keeps its last block back until end(). A dict when
        element is a list."""
        h = self._streaming()
        names = [element] if isinstance(element, str) or element is None else list(element)
        names = [n if n is not None else self._default_element() for n in names]
        parts = {n: [] for n in names}
        while h.check(_lib.clapp_pipeline_step(h.p)) == 1:
            for n in names:
                parts[n].append(h.lane_frames(n, lane))
        out = {n: self._concat(h, n, parts[n]) for n in names}
        return out[names[0]] if isinstance(element, str) or element is None else out

    def report(self, element):
        """What a sink (a probe) of the streaming instance measured, as a dict."""
        h = self._streaming()
        buf = ctypes.create_string_buffer(1 << 16)
        h.check(_lib.clapp_pipeline_report(h.p, _b(element), buf, len(buf)))
        return json.loads(buf.value.decode()) if buf.value else {}

    def close(self):
        """End the streaming instance (a later push starts a new one)."""
        if self._stream is not None:
            _lib.clapp_pipeline_finish(self._stream.p)
            self._stream.close()
            self._stream = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


# ---- checkpoints: safetensors, read with numpy alone -------------------------------

_DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I32": "<i4", "I64": "<i8", "U8": "u1"}


def _read_header(path):
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ClappError(-4, f"{path}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", head)
        text = f.read(n)
        if len(text) != n:
            raise ClappError(-4, f"{path}: truncated header ({len(text)} of {n} bytes)")
    return json.loads(text), 8 + n


def checkpoint_metadata(path):
    """The checkpoint's __metadata__ (pipeline text, blocks, seed, ...) as a dict of strings."""
    header, _ = _read_header(os.fspath(path))
    return dict(header.get("__metadata__", {}))


def read_checkpoint(path, optimizer=False):
    """Every tensor of a checkpoint as {name: numpy array} ("conv1d0.weight");
    the optimizer's moments (__optim__.*) only with optimizer=True."""
    path = os.fspath(path)
    header, base = _read_header(path)
    data = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, info in header.items():
        if name == "__metadata__" or (not optimizer and name.startswith("__optim__.")):
            continue
        if info["dtype"] not in _DTYPES:
            raise ClappError(-4, f"{path}: tensor {name}: dtype {info['dtype']} not read")
        a, b = info["data_offsets"]
        if base + b > data.shape[0]:
            raise ClappError(-4, f"{path}: tensor {name} runs past the end of the file")
        out[name] = np.frombuffer(data[base + a:base + b].tobytes(), dtype=_DTYPES[info["dtype"]]).reshape(
            info["shape"])
    return out
