"""Functions of a Keras model compiled once by ``jax.jit``, with its weights as arguments.

A ``jax.jit`` of a closure that calls a Keras model reads the model's variables while tracing:
their values become constants of the compiled function, so a function kept across a weight
change would compute with the old weights, and one made anew per call compiles anew per call.
`WeightsAsArguments` traces the function under `keras.StatelessScope` with every variable of the
model mapped to an argument (Keras's stateless pattern, as `keras.Model.stateless_call` does
it): the compiled function is reused for as long as the argument shapes stay the same, and
always computes with the variables' current values.
"""

from __future__ import annotations

import weakref

import jax
import keras


class WeightsAsArguments:
    """``fn(*args)`` compiled once per argument shapes, the model's variables passed as arguments.

    Args:
        model: the `keras.Layer` whose variables ``fn`` reads (every one of
            ``model.variables``, read when called; the variables of layers outside ``model``
            would still be traced as constants).
        fn: ``fn(*args)`` of arrays (or nested structures of arrays, ``None`` allowed) calling
            ``model``; it must not assign to the model's variables (assignments are dropped).

    Attributes:
        traces: how many times ``fn`` has been traced (each trace is one XLA compilation).

    Holds ``model`` by weak reference: caching an instance per model keeps no model alive.
    """

    def __init__(self, model, fn):
        self._model = weakref.ref(model)
        self._fn = fn
        self._jitted = {}  # the variables' identities -> the jitted function over their values
        self.traces = 0

    def _function(self, variables):
        key = tuple(id(v) for v in variables)
        jitted = self._jitted.get(key)
        if jitted is None:
            self._jitted.clear()  # another set of variables (e.g. after compile): the old one is dead
            jitted = self._jitted[key] = jax.jit(self._stateless(list(variables)))
        return jitted

    def _stateless(self, variables):
        def run(values, args):
            self.traces += 1  # Python runs here only while tracing
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return self._fn(*args)

        return run

    def __call__(self, *args):
        model = self._model()
        if model is None:
            raise RuntimeError("The model of this compiled function no longer exists.")
        variables = model.variables
        return self._function(variables)([v.value for v in variables], args)
