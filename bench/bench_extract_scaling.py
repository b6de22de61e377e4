"""How index extraction grows with the length of an array (issue 10, fault 2; issue 11's accessors).

A Patient with N names is run through the search-value extractor, once with the compiled
accessors (what the service uses) and once with fhirpathpy for every expression (the baseline,
measured in the same run). Linear extraction keeps the time per name flat as N grows; the
"growth" column is (time per name at N) / (time per name at the smallest N).

    python bench/bench_extract_scaling.py [--sizes 5000,10000,20000,40000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import time

from service.fhir.search.definitions import SearchParameterRegistry
from service.fhir.search.extract import Extractor


def patient(names: int) -> dict[str, object]:
    """A Patient with `names` HumanNames (family and one given name each)."""
    return {"resourceType": "Patient", "id": "many-names",
            "name": [{"family": f"Family{i}", "given": [f"Given{i}"]} for i in range(names)]}


def best_seconds(extractor: Extractor, resource: dict[str, object], repeat: int) -> float:
    """The fastest of `repeat` extractions of resource, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        extractor.extract(resource)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="5000,10000,20000,40000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    registry = SearchParameterRegistry.load()
    print(f"{'extractor':<22}{'names':>8}{'seconds':>10}{'us/name':>10}{'growth':>8}")
    for label, compiled in (("compiled accessors", True), ("fhirpathpy (baseline)", False)):
        extractor = Extractor(registry, compiled_accessors=compiled)
        extractor.extract(patient(10))          # compile the expressions before timing
        first = None
        for n in sizes:
            seconds = best_seconds(extractor, patient(n), args.repeat)
            per_name = seconds / n * 1e6
            first = first or per_name
            print(f"{label:<22}{n:>8}{seconds:>10.3f}{per_name:>10.1f}{per_name / first:>8.2f}")


if __name__ == "__main__":
    main()
