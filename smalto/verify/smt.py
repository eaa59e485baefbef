"""The symbolic core: a z3 (SMT) solver checks scenes against specifications and plans layouts.

    check(spec, scene)  -> Verdict   does the scene satisfy every constraint? if not, which fail
    plan(spec, cfg)     -> Scene     a complete scene that satisfies the spec, or a Contradiction
    absolute(spec)      -> str       the planned scene as the prompt the model draws best

Checking: each described object must be one object of the scene (Boolean "i is object j"
variables, one-to-one), with the attributes it names, in the relations it names, and the scene
must hold exactly as many objects as described. Each constraint is a tracked assertion. When they
cannot all hold, a MaxSAT pass (z3's Optimize with one soft constraint each) finds the matching
that satisfies most, and the verdict names the rest in words.

Planning: a cell (row, column) per object, all different, with the cells and relations the
prompt names; attributes it leaves free are chosen at random. When no layout exists, the unsat
core of the tracked constraints is the set of phrases that conflict, and the `Contradiction`
names them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import z3

from smalto.data.shapes import GRID, POSITIONS, Obj, Scene, ShapesConfig, captions
from smalto.verify.spec import Spec, SpecError, Thing, holds

MAX_OBJECTS = 4  # a ShapesWorld scene holds 1-4 objects (ShapesConfig's limit)


class Contradiction(SpecError):
    """A specification no scene satisfies; `phrases` are the words that conflict."""

    def __init__(self, message: str, phrases: list[str]):
        super().__init__(message)
        self.phrases = phrases


@dataclass(frozen=True)
class Verdict:
    satisfied: bool
    constraints: int  # how many there are
    failed: tuple[str, ...] = ()  # those the best matching leaves unsatisfied, in words

    @property
    def score(self) -> float:
        """Share of constraints satisfied (1.0 when all are)."""
        return 1.0 - len(self.failed) / max(self.constraints, 1)

    def to_dict(self) -> dict:
        return {"satisfied": self.satisfied, "score": round(self.score, 3), "failed": list(self.failed)}


def _things(spec: Spec) -> list[Thing]:
    """The described objects, plus unnamed ones up to a stated count."""
    extra = max(0, (spec.count or 0) - len(spec.things))
    return list(spec.things) + [Thing(words=f"object {len(spec.things) + k + 1} of {spec.count_words!r}")
                                for k in range(extra)]


def _want(thing: Thing, o: Obj, attr: str) -> bool:
    return getattr(thing, attr) is None or (getattr(thing, attr) == ((o.row, o.col) if attr == "cell" else
                                                                      getattr(o, attr)))


def check(spec: Spec, scene: Scene) -> Verdict:
    """Whether the scene satisfies the spec, and if not, what fails (see the module's docstring)."""
    things, objs = _things(spec), scene.objects
    solver = z3.Solver()
    x = [[z3.Bool(f"x{i}_{j}") for j in range(len(objs))] for i in range(len(things))]
    # Each description names at most one object, and each object answers at most one description.
    for group in [*x, *([x[i][j] for i in range(len(things))] for j in range(len(objs)))]:
        if len(group) > 1:
            solver.add(z3.AtMost(*group, 1))

    # words -> (tracker, weight): the explanation drops the lightest constraints it can, so a wrong
    # colour reads "not green" rather than "no green square found".
    tracked: dict[str, tuple[z3.BoolRef, int]] = {}

    def track(words: str, constraint, weight: int) -> None:
        tracker = z3.Bool(f"c{len(tracked)}")
        tracked[words] = (tracker, weight)
        solver.add(z3.Implies(tracker, constraint))

    n = len(things)
    track(f"{n} object{'s' * (n != 1)} wanted, {len(objs)} found", z3.BoolVal(len(objs) == n), 1)
    for i, t in enumerate(things):
        track(f"no {t.noun()} found ({t.words!r})", z3.Or(*x[i]) if objs else z3.BoolVal(False), 3)
        for attr, value in t.attributes().items():
            wrong = [z3.Not(x[i][j]) for j, o in enumerate(objs) if not _want(t, o, attr)]
            shown = POSITIONS[value[0]][value[1]] if attr == "cell" else value
            track(f"{t.words!r}: not {'at the ' if attr == 'cell' else ''}{shown}", z3.And(*wrong), 2)
    for rel in spec.relations:
        false = [z3.Not(z3.And(x[rel.a][j], x[rel.b][k])) for j, a in enumerate(objs) for k, b in enumerate(objs)
                 if j != k and not holds(rel.kind, a, b)]
        track(f"not true: {rel.words!r}", z3.And(*false), 1)

    if solver.check(*[t for t, _ in tracked.values()]) == z3.sat:
        return Verdict(True, len(tracked))
    best = z3.Optimize()
    best.set(maxsat_engine="wmax")  # exact weighted MaxSAT; here about twice as fast as the default (maxres)
    best.add(*solver.assertions())
    for tracker, weight in tracked.values():
        best.add_soft(tracker, weight)
    best.check()
    model = best.model()
    failed = tuple(words for words, (tracker, _) in tracked.items() if not z3.is_true(model.eval(tracker)))
    return Verdict(False, len(tracked), failed)


def plan(spec: Spec, cfg: ShapesConfig | None = None, seed: int = 0) -> Scene:
    """A complete scene satisfying the spec: cells from the solver, free attributes at random
    (seeded). Raises Contradiction naming the conflicting phrases when there is none."""
    cfg = cfg or ShapesConfig()
    things = _things(spec)
    if spec.count is not None and spec.count < len(spec.things):
        raise Contradiction(f"{spec.count_words!r}, but {len(spec.things)} objects are described: "
                            + ", ".join(repr(t.words) for t in spec.things), [spec.count_words])
    if len(things) > MAX_OBJECTS or not things:
        words = (repr(spec.count_words) if spec.count_words
                 else ", ".join(repr(t.words) for t in things) or repr(spec.text))
        raise Contradiction(f"a scene holds 1 to {MAX_OBJECTS} objects; {words} asks for {len(things)}",
                            [spec.count_words] if spec.count_words else [t.words for t in things])
    for t in things:
        for attr, known in (("shape", cfg.shapes), ("color", cfg.colors), ("size", cfg.size_names)):
            if getattr(t, attr) not in (None, *known):
                raise Contradiction(f"{t.words!r}: this world draws no {getattr(t, attr)} {attr}", [t.words])

    solver = z3.Solver()
    row = [z3.Int(f"row{i}") for i in range(len(things))]
    col = [z3.Int(f"col{i}") for i in range(len(things))]
    for r, c in zip(row, col):
        solver.add(0 <= r, r < GRID, 0 <= c, c < GRID)
    solver.add(z3.Distinct(*[r * GRID + c for r, c in zip(row, col)]))  # one object per cell
    phrases: dict[str, str] = {}  # tracker name -> words

    def track(words: str, constraint) -> None:
        name = f"p{len(phrases)}"
        phrases[name] = words
        solver.assert_and_track(constraint, name)

    for i, t in enumerate(things):
        if t.cell is not None:
            track(t.words, z3.And(row[i] == t.cell[0], col[i] == t.cell[1]))
    for rel in spec.relations:
        a, b = rel.a, rel.b
        track(rel.words, {"left of": col[a] < col[b], "right of": col[a] > col[b], "above": row[a] < row[b],
                          "below": row[a] > row[b], "same row as": row[a] == row[b],
                          "same column as": col[a] == col[b]}[rel.kind])
    if solver.check() != z3.sat:
        conflict = [phrases[str(c)] for c in solver.unsat_core()]
        why = " and ".join(repr(p) for p in conflict) if conflict else "the objects described"
        raise Contradiction(f"no layout satisfies {why} together (each object needs its own cell of the "
                            f"{GRID}x{GRID} grid)", conflict)

    rng = np.random.default_rng(seed)
    for i in rng.permutation(len(things)):  # a seeded layout among the valid ones: pin cells one by one
        for cell in rng.permutation(GRID * GRID):
            solver.push()
            solver.add(row[i] == int(cell) // GRID, col[i] == int(cell) % GRID)
            if solver.check() == z3.sat:
                break
            solver.pop()
    model = solver.model()

    def pick(value, options):
        return value if value is not None else options[rng.integers(len(options))]

    objects = [Obj(model.eval(row[i]).as_long(), model.eval(col[i]).as_long(), pick(t.shape, cfg.shapes),
                   pick(t.color, cfg.colors), pick(t.size, cfg.size_names)) for i, t in enumerate(things)]
    return Scene(tuple(objects))


def absolute(spec: Spec, cfg: ShapesConfig | None = None, seed: int = 0) -> str:
    """The request in the absolute form the model draws best ("a small green square at the top
    left and a large blue circle at the top right"): the planned scene's canonical caption."""
    return captions(plan(spec, cfg, seed))[0]
