"""Time `widthwise.classify` on series of several lengths.

    python benchmarks/verdicts_speed.py

Prints milliseconds per call and the ratio to a baseline measured in the same run: a cubic
least-squares fit (`numpy.polyfit`) of the same series, the cheapest thing one could call a
"curve reading". The target is well under 10 ms at 500 points.
"""

from __future__ import annotations

import timeit

import numpy as np

from widthwise.patterns import classify, stable_from, synthetic_series


def best_seconds(fn, *args, reps: int) -> float:
    """Fastest of three timings of `reps` calls, per call."""
    return min(timeit.repeat(lambda: fn(*args), number=reps, repeat=3)) / reps


def main() -> None:
    print("| n | kind | classify ms | polyfit ms | ratio | stable_from ms |")
    print("|---|---|---|---|---|---|")
    for n in (50, 200, 500, 2000):
        for kind in ("IS", "DS"):
            steps, values = synthetic_series(kind, n, noise=0.05, spacing="uneven", rng=n)
            t_c = best_seconds(classify, values, steps, reps=200)
            t_b = best_seconds(np.polyfit, steps, values, 3, reps=200)
            t_s = best_seconds(stable_from, values, steps, reps=1)
            print(
                f"| {n} | {kind} | {t_c * 1e3:.2f} | {t_b * 1e3:.3f} | {t_c / t_b:.0f} | "
                f"{t_s * 1e3:.0f} |"
            )


if __name__ == "__main__":
    main()
