"""A bounded, streaming, fail-closed walk of the pickles in an uploaded torch program.

`pickletools.genops` decodes one opcode at a time from a stream and never executes anything; this
module runs it over a capped reader and simulates only what it must to name every global a loader
would import: a stack of what each opcode pushed (strings kept, anything else a placeholder) and
the memo. All state is bounded, whatever the bytes say:

- bytes: a member is read through a reader that stops at `MAX_PICKLE_BYTES` (and the caller
  refuses a member that declares more before reading it);
- opcodes: `MAX_OPS` per pickle and `Budget` (default `MAX_ARCHIVE_OPS`) across one upload, so a
  "billion opcodes in little bytes" pickle stops after a bounded, measured time;
- stack depth `MAX_STACK`, memo entries `MAX_MEMO`, a kept string at most `MAX_NAME` characters.

Fail closed: a pickle that does not parse, that ends early, or that hits a cap is refused (422
`malformed_pickle` / `pickle_limits`), never passed. Every GLOBAL, INST and STACK_GLOBAL is matched
exactly (module and name, no wildcards) against the allowlist of the archive kind; a
STACK_GLOBAL whose operands are not two known strings, and any use of the copyreg extension
registry (EXT1/EXT2/EXT4, which imports whatever the loading process registered), is refused
(422 `unsafe_pickle`). REDUCE, BUILD, NEWOBJ(_EX) and OBJ can only call what such an import put on
the stack (or what the loader's own `persistent_load` returns), so checking the imports is
enough.

What the allowlist trusts: see `pickle_allowlist`.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, cast

from app.core.errors import Unprocessable, UnsafePickle
from app.ml_models.pickle_allowlist import PT2_POLICY as PT2_POLICY
from app.ml_models.pickle_allowlist import TORCHSCRIPT_POLICY as TORCHSCRIPT_POLICY
from app.ml_models.pickle_allowlist import Policy as Policy

MAX_PICKLE_BYTES = 64 * 1024 * 1024
MAX_OPS = 1_000_000
MAX_ARCHIVE_OPS = 2_000_000
MAX_STACK = 100_000
MAX_MEMO = 500_000
MAX_NAME = 256
MAX_LISTED = 32  # globals named in a refusal's detail


@dataclass
class Budget:
    """Opcodes left for one upload, shared by every pickle in it."""

    ops: int = MAX_ARCHIVE_OPS


class PickleRefused(Exception):
    """Internal: the walk cannot go on (malformed or over a cap)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class _Capped(io.RawIOBase):
    """At most `cap` bytes of `src`; then end of file (a truncated pickle, refused)."""

    def __init__(self, src: IO[bytes], cap: int) -> None:
        self._src, self._left = src, cap

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._left)
        if want <= 0:
            return 0
        try:
            data = self._src.read(want)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
            raise PickleRefused("archive_malformed", f"is corrupt ({exc})"[:300]) from exc
        buffer[: len(data)] = data
        self._left -= len(data)
        return len(data)


class _Reader:
    """The buffered reader without `tell` (genops then asks no position per opcode)."""

    def __init__(self, src: IO[bytes], cap: int) -> None:
        buffered = io.BufferedReader(_Capped(src, cap), 64 * 1024)
        read = buffered.read
        # A declared length is never allocated beyond the cap (BufferedReader sizes its result
        # from the request before reading).
        self.read = lambda n=-1: read(n if 0 <= n <= cap else cap + 1)
        self.readline = buffered.readline
        self.peek = buffered.peek


_MARK = object()
_STRING_OPS = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"}
    | {"SHORT_BINSTRING", "BINSTRING", "STRING"}
)
_EXT_OPS = frozenset({"EXT1", "EXT2", "EXT4"})
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})


def _effects() -> dict[str, tuple[int, int, int, bool]]:
    """Per opcode: (items popped below a mark or -1 for no mark, items popped, pushed, mark)."""
    table = {}
    for op in pickletools.opcodes:
        before, after = op.stack_before, op.stack_after
        if pickletools.markobject in before:
            below = before.index(pickletools.markobject)
            table[op.name] = (below, 0, len(after), False)
        else:
            mark = after == [pickletools.markobject]
            table[op.name] = (-1, len(before), 0 if mark else len(after), mark)
    return table


_EFFECTS = _effects()
_SPECIAL = _STRING_OPS | _EXT_OPS | _PUT_OPS | _GET_OPS | {"MEMOIZE", "DUP", "PROTO"}
_SPECIAL |= {"GLOBAL", "INST", "STACK_GLOBAL"}
# Opcodes without a mark, memo or import: (items popped, 0 or 1 pushed).
_PLAIN = {
    name: (pops, pushes)
    for name, (below, pops, pushes, mark) in _EFFECTS.items()
    if below < 0 and not mark and pushes <= 1 and name not in _SPECIAL
}
_PLAIN_BY_OP = {op: _PLAIN[op.name] for op in pickletools.opcodes if op.name in _PLAIN}


class _Walk:
    """The stack and memo of one pickle, bounded."""

    def __init__(self) -> None:
        self.stack: list[object] = []
        self.memo: dict[int, str | None] = {}

    def pop(self, count: int) -> list[object]:
        if not count:
            return []
        taken = self.stack[-count:]
        if len(taken) < count or any(v is _MARK for v in taken):
            raise PickleRefused("malformed_pickle", "pops below its stack or across a mark")
        del self.stack[-count:]
        return taken

    def pop_mark(self, below: int) -> None:
        for at in range(len(self.stack) - 1, -1, -1):
            if self.stack[at] is _MARK:
                del self.stack[at:]
                self.pop(below)
                return
        raise PickleRefused("malformed_pickle", "uses a mark it never set")

    def push(self, value: object) -> None:
        if len(self.stack) >= MAX_STACK:
            raise PickleRefused("pickle_limits", f"nests deeper than {MAX_STACK}")
        self.stack.append(value)

    def memo_put(self, key: int) -> None:
        if not self.stack or self.stack[-1] is _MARK:
            raise PickleRefused("malformed_pickle", "memoizes an empty stack")
        if key not in self.memo and len(self.memo) >= MAX_MEMO:
            raise PickleRefused("pickle_limits", f"memoizes over {MAX_MEMO} objects")
        top = self.stack[-1]
        self.memo[key] = top if isinstance(top, str) else None

    def memo_get(self, key: int) -> None:
        if key not in self.memo:
            raise PickleRefused("malformed_pickle", "reads a memo entry it never wrote")
        self.push(self.memo[key])


def _global_name(arg: object) -> tuple[str, str] | None:
    module, sep, name = str(arg).partition(" ")
    if not sep or " " in name or not module or not name:
        return None
    return module, name


def _step(walk: _Walk, name: str, arg: object) -> tuple[str, str] | str | None:
    """Apply one opcode; return what it imports: (module, name), a refusal label, or None."""
    if name in _STRING_OPS:
        text = arg if isinstance(arg, str) else None
        walk.push(text if text is not None and len(text) <= MAX_NAME else None)
        return None
    if name in _PUT_OPS:
        walk.memo_put(int(str(arg)))
        return None
    if name == "MEMOIZE":
        walk.memo_put(len(walk.memo))
        return None
    if name in _GET_OPS:
        walk.memo_get(int(str(arg)))
        return None
    if name == "DUP":
        top = walk.pop(1)[0]
        walk.push(top)
        walk.push(top)
        return None
    if name == "PROTO" and not 0 <= int(str(arg)) <= 5:
        raise PickleRefused("malformed_pickle", f"declares protocol {arg}")
    imported: tuple[str, str] | str | None = None
    if name in ("GLOBAL", "INST"):
        imported = _global_name(arg) or "<unparsable GLOBAL>"
    elif name == "STACK_GLOBAL":
        module, attr = walk.pop(2)
        ok = isinstance(module, str) and isinstance(attr, str) and module and attr
        imported = (str(module), str(attr)) if ok else "<unresolvable STACK_GLOBAL>"
        walk.push(None)
        return imported
    elif name in _EXT_OPS:
        imported = f"<copyreg extension {arg} ({name})>"
    below, pops, pushes, mark = _EFFECTS[name]
    if below >= 0:
        walk.pop_mark(below)
    else:
        walk.pop(pops)
    if mark:
        walk.push(_MARK)
    for _ in range(pushes):
        walk.push(None)
    return imported


def _walk_one(reader: _Reader, budget: Budget) -> Iterator[tuple[str, str] | str]:
    """Every import of the pickle at the reader's position, up to and including its STOP.

    The common opcodes (no mark, no memo, no import) take the inlined path: a few list
    operations per opcode, so the opcode cap is also a time bound (measured in BENCHMARKS.md).
    """
    walk = _Walk()
    stack = walk.stack
    plain = _PLAIN_BY_OP
    left = min(MAX_OPS, budget.ops)
    try:
        for op, arg, _pos in pickletools.genops(cast(IO[bytes], reader)):
            left -= 1
            if left < 0:
                raise PickleRefused("pickle_limits", f"has over {min(MAX_OPS, budget.ops)} opcodes")
            effect = plain.get(op)
            if effect is not None:
                pops, pushes = effect
                if pops:
                    if len(stack) < pops:
                        raise PickleRefused("malformed_pickle", "pops below its stack")
                    for _ in range(pops):
                        if stack.pop() is _MARK:
                            raise PickleRefused("malformed_pickle", "pops across a mark")
                if pushes:
                    if len(stack) >= MAX_STACK:
                        raise PickleRefused("pickle_limits", f"nests deeper than {MAX_STACK}")
                    stack.append(None)
                continue
            imported = _step(walk, op.name, arg)
            if imported is not None:
                yield imported
    except PickleRefused:
        raise
    except Exception as exc:  # any decoding error of genops: the loader would not get further
        raise PickleRefused("malformed_pickle", f"does not parse ({exc})"[:300]) from exc
    finally:
        budget.ops -= min(MAX_OPS, budget.ops) - max(left, 0)


def iter_imports(
    src: IO[bytes], budget: Budget, *, whole: bool = True
) -> Iterator[tuple[str, str] | str]:
    """Every import of the pickle(s) in `src` (at most `MAX_PICKLE_BYTES` of it). `whole`: the
    stream must be nothing but complete pickles, one after another (`torch.load`'s legacy
    format reads several), else only the first pickle is walked.

    Raises:
        PickleRefused: malformed, truncated, or over a cap.
    """
    reader = _Reader(src, MAX_PICKLE_BYTES)
    yield from _walk_one(reader, budget)
    while whole and reader.peek(1)[:1]:
        yield from _walk_one(reader, budget)


def label(imported: tuple[str, str] | str) -> str:
    return imported if isinstance(imported, str) else f"{imported[0]}.{imported[1]}"


def refusal(exc: PickleRefused, where: str) -> Unprocessable:
    """The problem for a pickle the walk could not finish."""
    return Unprocessable(f"{where} is refused: it {exc.reason}.", code=exc.code)


def check(src: IO[bytes], where: str, policy: Policy, budget: Budget, hint: str) -> None:
    """Hold every pickle in `src` to `policy`; stop at the first import it does not allow.

    Raises:
        UnsafePickle: an import outside the allowlist, an unresolvable STACK_GLOBAL or EXT*.
        Unprocessable: `malformed_pickle` or `pickle_limits`.
    """
    try:
        for imported in iter_imports(src, budget):
            if isinstance(imported, str) or not policy.allows(*imported):
                name = label(imported)
                raise UnsafePickle(
                    f"{where} imports {name}, which is not allowed. {hint}", globals=[name]
                )
    except PickleRefused as exc:
        raise refusal(exc, where) from exc


def collect(
    src: IO[bytes], policy: Policy, budget: Budget
) -> tuple[list[str], PickleRefused | None]:
    """The first `MAX_LISTED` imports `policy` does not allow (for a refusal's detail), and why the
    walk stopped early, if it did."""
    bad: list[str] = []
    try:
        for imported in iter_imports(src, budget, whole=False):
            name = label(imported)
            if (isinstance(imported, str) or not policy.allows(*imported)) and name not in bad:
                bad.append(name)
                if len(bad) >= MAX_LISTED:
                    break
    except PickleRefused as exc:
        return sorted(bad), exc
    return sorted(bad), None
