"""The study's hypotheses, one module each (``SPEC = HypothesisSpec(...)``, see :mod:`atlas_core.spec`).

Each module holds the rule on plain numbers (``h003(small_boost, large_boost, ...)``, what the tests
exercise and the docs quote) and ``rule(small, large, thresholds)``, which picks those numbers out of
two models' statistics. Add a hypothesis by adding a module here (or declaring a spec in your own
package: docs/EXTENDING.md).
"""
