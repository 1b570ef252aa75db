"""The matmuls a traced function computes: every `dot_general` of its jaxpr, inside nested
jaxprs (custom_vjp rules, checkpoints, scans) too. Shared by the model tests."""

import jax
import jax.extend


def dot_generals(fn, *args, **make_jaxpr_kwargs) -> list:
    return [e for e in _equations(jax.make_jaxpr(fn, **make_jaxpr_kwargs)(*args).jaxpr)
            if e.primitive.name == "dot_general"]


def _equations(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from _equations(sub)
