"""CEL for security checks: compile once into Python, evaluate fast, as Kubernetes does.

Checks are CEL expressions over ``object`` (and ``oldObject``, ``namespaceObject``,
``params``, ``request``, ``variables``), exactly as in a ValidatingAdmissionPolicy. The
reference Python library (``celpy``) interprets a parse tree per evaluation, which is far
too slow for the evaluate service, so the subset that baselines use is compiled here into
one generated Python function per expression, and checked against ``celpy`` by
differential property tests.

Public surface::

    program = compile("object.spec.containers.all(c, has(c.image))")
    program.evaluate({"object": pod})      # -> True / False / value, or CelEvalError
    program.field_paths                    # {("object", "spec", "containers", "*", "image")}
    evaluate_reference(source, activation)  # the slow celpy evaluator, same conventions
    {"object": pod, MEMO: {}}              # an activation whose programs share subexpressions

Errors::

    CelError
    ├── CelSyntaxError(message, line=, column=)   bad syntax, unknown name or function
    └── CelEvalError(message)                     a CEL runtime error (the check errs)
"""

from kposture.evaluate.policy.cel.errors import CelError, CelEvalError, CelSyntaxError
from kposture.evaluate.policy.cel.program import DEFAULT_VARIABLES, Program, compile
from kposture.evaluate.policy.cel.reference import evaluate_reference
from kposture.evaluate.policy.cel.runtime import MEMO
from kposture.evaluate.policy.cel.values import CelType

__all__ = [
    "DEFAULT_VARIABLES",
    "MEMO",
    "CelError",
    "CelEvalError",
    "CelSyntaxError",
    "CelType",
    "Program",
    "compile",
    "evaluate_reference",
]
