"""ARM template language: the expression parser and evaluator (`expressions`) and the library of pure
template functions (`functions.PURE_FUNCTIONS`). The deployment engine adds the functions that need a
deployment's context (parameters, variables, resourceId, reference, ...)."""
