"""The grade scales the mesh knows (grades low to high, population priors, below-lowest grade)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GradeScale:
    key: str
    display_name: str
    grades: tuple[str, ...]  # lowest first
    priors: tuple[float, ...]
    below_lowest_grade: str | None = None

    def index(self, grade: str) -> int:
        """Position of a grade, lowest 0; -1 for the below-lowest grade; ValueError if unknown."""
        if grade in self.grades:
            return self.grades.index(grade)
        if self.below_lowest_grade is not None and grade == self.below_lowest_grade:
            return -1
        allowed = list(self.grades) + ([self.below_lowest_grade] if self.below_lowest_grade else [])
        raise ValueError(f"grade {grade!r} is not on scale {self.key}; use one of {', '.join(allowed)}")

    @property
    def ladder(self) -> tuple[str, ...]:
        """Every grade an essay can get, lowest first (the below-lowest grade included)."""
        return ((self.below_lowest_grade,) if self.below_lowest_grade else ()) + self.grades


def _uniform(n: int) -> tuple[float, ...]:
    return tuple(1 / n for _ in range(n))


SCALES: dict[str, GradeScale] = {
    scale.key: scale
    for scale in (
        GradeScale(
            "swedish_8_anchor",
            "Swedish National Exam (8-anchor)",
            ("F", "E", "D", "D+", "C", "C+", "B", "A"),
            (0.02, 0.08, 0.15, 0.20, 0.25, 0.15, 0.10, 0.05),
        ),
        GradeScale(
            "eng5_np_legacy_9_step",
            "ENG5 NP Legacy (9-step)",
            ("F+", "E-", "E+", "D-", "D+", "C-", "C+", "B", "A"),
            _uniform(9),
            below_lowest_grade="F",
        ),
        GradeScale(
            "eng5_np_national_9_step",
            "ENG5 NP National (9-step)",
            ("1", "2", "3", "4", "5", "6", "7", "8", "9"),
            _uniform(9),
            below_lowest_grade="0",
        ),
    )
}


def get_scale(key: str) -> GradeScale:
    try:
        return SCALES[key]
    except KeyError:
        raise KeyError(f"unknown grade scale {key!r}; known scales: {', '.join(sorted(SCALES))}") from None
