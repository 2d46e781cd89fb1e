"""Request markers for prof: mark requests, jobs or phases so that a profile shows how long
each took (the viewer plots their latency over the run's CPU time) and can be narrowed to
the samples inside them.

`prof run` makes this module importable; copy it into your project to keep the calls when
the program runs without prof (then every call does nothing, cheaply).

    import prof_markers

    with prof_markers.mark("import batch"):
        ...

    @prof_markers.marked("render")
    def render(page): ...

    app = prof_markers.WSGIMiddleware(app)    # each request, named "GET /users/{id}"
    app = prof_markers.ASGIMiddleware(app)    # the same for ASGI (HTTP and websocket)

Markers nest per thread: `end()` ends the innermost marker `begin()` started on the same
thread. Work that interleaves on one thread (coroutines) uses `interval()`, which records a
whole marker from its two times.
"""

import functools
import re
import sys
import time

__all__ = [
    "enabled",
    "begin",
    "end",
    "interval",
    "mark",
    "marked",
    "route_name",
    "WSGIMiddleware",
    "ASGIMiddleware",
]

_monotonic_ns = time.monotonic_ns


def _noop(*_args):
    return None


def _load():
    """The agent's functions (prof_marker_*), found in the process by their symbol names:
    prof's agent is preloaded into every process `prof run` starts."""
    if sys.implementation.name == "pypy":
        try:
            import cffi

            ffi = cffi.FFI()
            ffi.cdef(
                "void prof_marker_begin(const char *name);"
                "void prof_marker_end(void);"
                "void prof_marker_interval(const char *name, uint64_t start_ns, uint64_t end_ns);"
                "int prof_marker_enabled(void);"
            )
            lib = ffi.dlopen(None)
            if lib.prof_marker_enabled():
                return lib.prof_marker_begin, lib.prof_marker_end, lib.prof_marker_interval
        except Exception:
            pass
    try:
        import ctypes

        lib = ctypes.CDLL(None)
        begin_, end_, interval_ = lib.prof_marker_begin, lib.prof_marker_end, lib.prof_marker_interval
        enabled_ = lib.prof_marker_enabled
        begin_.argtypes, begin_.restype = [ctypes.c_char_p], None
        end_.argtypes, end_.restype = [], None
        interval_.argtypes = [ctypes.c_char_p, ctypes.c_uint64, ctypes.c_uint64]
        interval_.restype = None
        enabled_.argtypes, enabled_.restype = [], ctypes.c_int
        if enabled_():
            return begin_, end_, interval_
    except Exception:
        pass
    return None


_funcs = _load()
if _funcs is None:
    _begin, _end, _interval = _noop, _noop, _noop
else:
    _begin, _end, _interval = _funcs


def enabled():
    """True when the program runs under prof and markers are recorded."""
    return _funcs is not None


def _bytes(name):
    return name if isinstance(name, bytes) else str(name).encode("utf-8", "replace")


def begin(name):
    """Starts a marker on this thread (names are cut at 200 bytes)."""
    _begin(_bytes(name))


def end():
    """Ends this thread's innermost open marker."""
    _end()


def interval(name, start_ns, end_ns):
    """Records a whole marker from `start_ns` to `end_ns` (`time.monotonic_ns()` values)."""
    _interval(_bytes(name), int(start_ns), int(end_ns))


class mark(object):
    """`with mark("name"):` marks the block (also when it raises)."""

    __slots__ = ("_name",)

    def __init__(self, name):
        self._name = _bytes(name)

    def __enter__(self):
        _begin(self._name)
        return self

    def __exit__(self, *_exc):
        _end()
        return False


def marked(name=None):
    """Decorator: marks every call of the function (named after it unless `name` is given).
    Use `interval`-based marking for coroutine functions: it is applied automatically."""

    def wrap(fn):
        label = _bytes(name if name is not None else getattr(fn, "__qualname__", fn.__name__))
        import inspect

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args, **kwargs):
                t0 = _monotonic_ns()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    _interval(label, t0, _monotonic_ns())

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            _begin(label)
            try:
                return fn(*args, **kwargs)
            finally:
                _end()

        return wrapper

    if callable(name) and not isinstance(name, (str, bytes)):
        fn, name = name, None
        return wrap(fn)
    return wrap


# Path segments that are ids, not routes: numbers, UUIDs, long hex strings (hashes).
_ID = re.compile(
    r"^(?:\d+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]{16,})$"
)


def route_name(method, path):
    """"GET /users/{id}/posts" for ("GET", "/users/42/posts"): ids folded so that markers
    group by route."""
    parts = [("{id}" if _ID.match(p) else p) for p in (path or "/").split("/")]
    return "%s %s" % (method or "?", "/".join(parts) or "/")


class _ClosingIterable(object):
    """The response body of a WSGI request: the marker ends when the server closes it, so
    it covers streaming the body too."""

    def __init__(self, body):
        self._body = body
        self._iter = iter(body)
        self._open = True

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._iter)

    next = __next__

    def close(self):
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            if self._open:
                self._open = False
                _end()


class WSGIMiddleware(object):
    """Marks each request of a WSGI application, named by `name(environ)` (default: method
    and path with ids folded: "GET /users/{id}")."""

    def __init__(self, app, name=None):
        self.app = app
        self.name = name

    def __call__(self, environ, start_response):
        if _funcs is None:
            return self.app(environ, start_response)
        if self.name is not None:
            label = self.name(environ)
        else:
            label = route_name(environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
        _begin(_bytes(label))
        try:
            body = self.app(environ, start_response)
        except BaseException:
            _end()
            raise
        return _ClosingIterable(body)


class ASGIMiddleware(object):
    """Marks each HTTP request and websocket session of an ASGI application. Requests
    interleave on the event loop's thread, so each is recorded whole when it ends."""

    def __init__(self, app, name=None):
        self.app = app
        self.name = name

    async def __call__(self, scope, receive, send):
        kind = scope.get("type")
        if _funcs is None or kind not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        if self.name is not None:
            label = self.name(scope)
        else:
            method = scope.get("method", "WS") if kind == "http" else "WS"
            label = route_name(method, scope.get("path"))
        t0 = _monotonic_ns()
        try:
            return await self.app(scope, receive, send)
        finally:
            _interval(_bytes(label), t0, _monotonic_ns())
