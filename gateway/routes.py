"""Path templates of ``google.api.http`` rules: parsing, matching and route lookup.

Template grammar (``google/api/http.proto``)::

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb     = ":" LITERAL ;

Matching follows grpc-gateway v2 with its default unescaping mode (``UnescapingModeLegacy``):
the whole request path is percent-decoded before routing, so a ``%2F`` inside a value
splits segments like ``/`` does, and path values need no further decoding. ASGI's
``scope["path"]`` is already decoded that way. A verb is split off the last segment only
when the template being tried has a verb, so ``/api/status:batchGet`` never matches the
verb-less template ``/api/status``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

T = TypeVar("T")

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Characters grpc-gateway's template parser accepts in a literal segment or verb.
_LITERAL = re.compile(r"[A-Za-z0-9\-._~%!$&'()*+,;=@]+")


ROUTE_SCOPE_KEY = "envios.route"
"""ASGI scope key under which the gateway stores the template of the route it served."""


class TemplateError(ValueError):
    """Raised when a path template does not follow the ``google.api.http`` grammar."""


class SegmentKind(Enum):
    """Kind of a template segment: literal text, ``*`` or ``**``."""

    LITERAL = 0
    WILDCARD = 1
    DEEP_WILDCARD = 2


@dataclass(frozen=True)
class Segment:
    """One template segment; ``text`` is set for literals only."""

    kind: SegmentKind
    text: str = ""


@dataclass(frozen=True)
class Variable:
    """A captured field path and the template segments ``[start, end)`` it covers."""

    field_path: str
    start: int
    end: int


@dataclass(frozen=True)
class PathTemplate:
    """A parsed path template."""

    source: str
    segments: tuple[Segment, ...]
    variables: tuple[Variable, ...]
    verb: str = ""

    @property
    def specificity(self) -> tuple[tuple[int, ...], int]:
        """Sort key: literal segments before ``*`` before ``**``, then templates with a verb."""
        ranks = tuple(segment.kind.value for segment in self.segments)
        return ranks, 0 if self.verb else 1

    def match(self, components: Sequence[str], verb: str) -> dict[str, str] | None:
        """Return the captured values by field path, or None when the path does not match."""
        if verb != self.verb:
            return None
        spans = self._segment_spans(len(components))
        if spans is None:
            return None
        for segment, (start, _) in zip(self.segments, spans, strict=True):
            if segment.kind is SegmentKind.LITERAL and components[start] != segment.text:
                return None
        return {
            variable.field_path: "/".join(
                components[spans[variable.start][0] : spans[variable.end - 1][1]]
            )
            for variable in self.variables
        }

    @functools.cached_property
    def fixed_width(self) -> int:
        """Number of segments that take exactly one path component (all but ``**``)."""
        return sum(1 for s in self.segments if s.kind is not SegmentKind.DEEP_WILDCARD)

    def _segment_spans(self, count: int) -> list[tuple[int, int]] | None:
        """Give each segment its component range; ``**`` takes whatever the others leave."""
        fixed = self.fixed_width
        spare = count - fixed
        has_deep = fixed != len(self.segments)
        if spare < 0 or (spare > 0 and not has_deep):
            return None
        spans = []
        position = 0
        for segment in self.segments:
            width = spare if segment.kind is SegmentKind.DEEP_WILDCARD else 1
            spans.append((position, position + width))
            position += width
        return spans


def parse_template(template: str) -> PathTemplate:
    """Parse a ``google.api.http`` path template.

    Raises:
        TemplateError: the template breaks the grammar, nests variables, repeats a field
            path or has more than one ``**``.
    """
    if not template.startswith("/"):
        raise TemplateError(f"path template {template!r} must start with '/'")
    parser = _Parser(template)
    parsed = parser.parse()
    deep = [s for s in parsed.segments if s.kind is SegmentKind.DEEP_WILDCARD]
    if len(deep) > 1:
        raise TemplateError(f"path template {template!r} has more than one '**'")
    names = [v.field_path for v in parsed.variables]
    if len(set(names)) != len(names):
        raise TemplateError(f"path template {template!r} binds a field path twice")
    return parsed


class _Parser:
    """Recursive-descent parser over the template text after its leading '/'."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.text, self.verb = _split_verb(template)
        self.position = 1
        self.segments: list[Segment] = []
        self.variables: list[Variable] = []

    def parse(self) -> PathTemplate:
        self._segments(in_variable=False)
        if self.position != len(self.text):
            self._fail("unexpected character")
        return PathTemplate(self.template, tuple(self.segments), tuple(self.variables), self.verb)

    def _segments(self, in_variable: bool) -> None:
        self._segment(in_variable)
        while self._peek() == "/":
            self.position += 1
            self._segment(in_variable)

    def _segment(self, in_variable: bool) -> None:
        if self.text.startswith("**", self.position):
            self.position += 2
            self.segments.append(Segment(SegmentKind.DEEP_WILDCARD))
        elif self._peek() == "*":
            self.position += 1
            self.segments.append(Segment(SegmentKind.WILDCARD))
        elif self._peek() == "{":
            if in_variable:
                self._fail("nested variable")
            self._variable()
        else:
            self.segments.append(Segment(SegmentKind.LITERAL, self._literal()))

    def _variable(self) -> None:
        self.position += 1
        field_path = self._field_path()
        start = len(self.segments)
        if self._peek() == "=":
            self.position += 1
            self._segments(in_variable=True)
        else:
            self.segments.append(Segment(SegmentKind.WILDCARD))
        if self._peek() != "}":
            self._fail("expected '}'")
        self.position += 1
        self.variables.append(Variable(field_path, start, len(self.segments)))

    def _field_path(self) -> str:
        parts = [self._match(_IDENT, "field name")]
        while self._peek() == ".":
            self.position += 1
            parts.append(self._match(_IDENT, "field name"))
        return ".".join(parts)

    def _literal(self) -> str:
        return self._match(_LITERAL, "literal segment")

    def _match(self, pattern: re.Pattern[str], expected: str) -> str:
        found = pattern.match(self.text, self.position)
        if found is None:
            self._fail(f"expected {expected}")
            raise AssertionError  # unreachable: _fail raises
        self.position = found.end()
        return found.group()

    def _peek(self) -> str:
        return self.text[self.position : self.position + 1]

    def _fail(self, problem: str) -> None:
        raise TemplateError(
            f"invalid path template {self.template!r}: {problem} at offset {self.position}"
        )


def _split_verb(template: str) -> tuple[str, str]:
    """Split ``:verb`` off the last segment; a ':' inside braces belongs to no verb."""
    last_slash = template.rfind("/")
    last_brace = template.rfind("}")
    colon = template.rfind(":", max(last_slash, last_brace) + 1)
    if colon == -1:
        return template, ""
    verb = template[colon + 1 :]
    if not _LITERAL.fullmatch(verb):
        raise TemplateError(f"invalid path template {template!r}: bad verb {verb!r}")
    return template[:colon], verb


@dataclass(frozen=True)
class Route(Generic[T]):
    """A path template bound to an HTTP method and a target (a binding)."""

    method: str
    template: PathTemplate
    target: T


class LookupStatus(Enum):
    """Outcome of a route lookup."""

    FOUND = "found"
    NOT_FOUND = "not found"
    METHOD_NOT_ALLOWED = "method not allowed"


class RouteOrder(Enum):
    """Precedence among templates that match the same path."""

    REGISTRATION = "grpc-gateway"
    """grpc-gateway v2: the route registered last is tried first. Its generated code
    registers the bindings of each service in declaration order, so among overlapping
    templates the one declared last wins."""
    SPECIFICITY = "specificity"
    """Envoy's transcoder: at the first segment where two templates differ, a literal beats
    ``*`` and ``*`` beats ``**``; then a template with a verb wins; then the one declared
    first."""


@dataclass(frozen=True)
class RouteMatch(Generic[T]):
    """Result of ``Router.lookup``; ``route`` and ``params`` are set when FOUND.

    When the status is METHOD_NOT_ALLOWED and a GET route matches the path, ``get_route``
    and ``params`` describe it, for grpc-gateway's POST-to-GET fallback.
    """

    status: LookupStatus
    route: Route[T] | None = None
    params: dict[str, str] = field(default_factory=dict)
    get_route: Route[T] | None = None


class Router(Generic[T]):
    """Find the route for a method and a decoded path, in the given ``RouteOrder``.

    Lookups try only the routes whose first segment and width can fit the path, in the same
    order as a scan of every route.
    """

    def __init__(
        self, routes: Iterable[Route[T]], order: RouteOrder = RouteOrder.REGISTRATION
    ) -> None:
        indexed = list(enumerate(routes))
        if order is RouteOrder.REGISTRATION:
            indexed.reverse()
        else:
            indexed.sort(key=lambda item: (item[1].template.specificity, item[0]))
        self._routes = [route for _, route in indexed]
        self.order = order
        self._firsts = [_literal_first(route.template) for route in self._routes]
        self._literal_firsts = frozenset(first for first in self._firsts if first is not None)
        self._fitting: dict[tuple[str | None, int], Candidates[T]] = {}
        self._fitting_by_method: dict[tuple[str, str | None, int], Candidates[T]] = {}
        # Position of the first route of each method whose verb a bare last segment names.
        self._bare_verbs: dict[tuple[str, str], int] = {}
        for position, route in enumerate(self._routes):
            if route.template.verb:
                key = (route.method, ":" + route.template.verb)
                self._bare_verbs.setdefault(key, position)

    @property
    def routes(self) -> list[Route[T]]:
        """The routes in the order they are tried."""
        return list(self._routes)

    def lookup(self, method: str, path: str) -> RouteMatch[T]:
        """Match ``path`` (percent-decoded, starting with '/') for ``method``.

        As grpc-gateway: when the last segment is exactly ``:<verb>`` of a template of this
        method, the path is not found, whatever templates tried after that one would match.
        """
        if not path.startswith("/"):
            return RouteMatch(LookupStatus.NOT_FOUND)
        return self.lookup_segments(method, path[1:].split("/"))

    def lookup_segments(self, method: str, components: list[str]) -> RouteMatch[T]:
        """Match a path already split into decoded segments (the part after each '/')."""
        bare_verb_at = self._bare_verbs.get((method, components[-1]), len(self._routes))
        for position, route in self._method_candidates(method, components[0], len(components)):
            if position >= bare_verb_at:
                break
            params = _match_route(route.template, components)
            if params is not None:
                return RouteMatch(LookupStatus.FOUND, route, params)
        # No route of this method matches: scan all methods to tell 404 from 405.
        other: RouteMatch[T] | None = None
        for position, route in self._candidates(components[0], len(components)):
            if position >= bare_verb_at:
                return RouteMatch(LookupStatus.NOT_FOUND)
            params = _match_route(route.template, components)
            if params is None:
                continue
            if other is None or (other.get_route is None and route.method == "GET"):
                get_route = route if route.method == "GET" else None
                other = RouteMatch(LookupStatus.METHOD_NOT_ALLOWED, None, params, get_route)
        if bare_verb_at < len(self._routes):
            return RouteMatch(LookupStatus.NOT_FOUND)
        return other or RouteMatch(LookupStatus.NOT_FOUND)

    def _candidates(self, first: str, count: int) -> Candidates[T]:
        """Return, in order, the routes that can match a path of ``count`` segments that
        starts with ``first``: a template whose first segment is literal fits only that
        first segment. Lists are cached for up to ``MAX_CACHED_SHAPES`` path shapes."""
        key = (first if first in self._literal_firsts else None, count)
        fitting = self._fitting.get(key)
        if fitting is None:
            pairs = enumerate(zip(self._routes, self._firsts, strict=True))
            fitting = [
                (position, route)
                for position, (route, literal) in pairs
                if literal in (None, first) and _fits(route, count)
            ]
            if len(self._fitting) < MAX_CACHED_SHAPES:
                self._fitting[key] = fitting
        return fitting

    def _method_candidates(self, method: str, first: str, count: int) -> Candidates[T]:
        """Return the part of ``_candidates(first, count)`` with routes of ``method``."""
        key = (method, first if first in self._literal_firsts else None, count)
        fitting = self._fitting_by_method.get(key)
        if fitting is None:
            candidates = self._candidates(first, count)
            fitting = [
                (position, route) for position, route in candidates if route.method == method
            ]
            if len(self._fitting_by_method) < MAX_CACHED_SHAPES:
                self._fitting_by_method[key] = fitting
        return fitting


MAX_CACHED_SHAPES = 1024
"""Path shapes (first segment, segment count) whose candidate lists a router keeps."""

Candidates = list[tuple[int, Route[T]]]


def _fits(route: Route[T], count: int) -> bool:
    """Return whether the template can match a path of ``count`` segments."""
    template = route.template
    fixed = template.fixed_width
    has_deep = fixed != len(template.segments)
    return count == fixed or (has_deep and count > fixed)


def _literal_first(template: PathTemplate) -> str | None:
    segment = template.segments[0]
    if segment.kind is not SegmentKind.LITERAL:
        return None
    if template.verb and len(template.segments) == 1:
        return None
    return segment.text


def _bare_verb(template: PathTemplate, last: str) -> bool:
    return bool(template.verb) and last == ":" + template.verb


def _match_route(template: PathTemplate, components: list[str]) -> dict[str, str] | None:
    last = components[-1]
    if template.verb and last.endswith(":" + template.verb):
        stem = last[: -len(template.verb) - 1]
        return template.match([*components[:-1], stem], template.verb)
    return template.match(components, "")
