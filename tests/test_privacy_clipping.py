"""Tests for keyboard_fl.privacy.clipping (clip bound, zero safety, noise statistics)."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from keyboard_fl.privacy.clipping import add_gaussian_noise, clip_update

clip_jit = jax.jit(clip_update)
noise_jit = jax.jit(add_gaussian_noise)


def _tree_norm(tree):
    return float(np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree.leaves(tree))))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(1e-4, 1e4),
    clip=st.floats(1e-3, 1e3),
    shapes=st.sampled_from([((3,), (2, 2)), ((5, 4),), ((1,), (7,), (2, 3))]),
)
def test_clip_bound_property(seed, scale, clip, shapes):
    rng = np.random.default_rng(seed)
    tree = {f"l{i}": jnp.asarray(rng.standard_normal(s) * scale, jnp.float32) for i, s in enumerate(shapes)}
    clipped, norm = clip_jit(tree, clip)
    assert np.isclose(float(norm), _tree_norm(tree), rtol=1e-5)
    assert _tree_norm(clipped) <= clip * (1 + 1e-5)
    assert jax.tree.structure(clipped) == jax.tree.structure(tree)
    if _tree_norm(tree) <= clip * (1 - 1e-5):
        for a, b in zip(jax.tree.leaves(clipped), jax.tree.leaves(tree)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    else:  # clipped exactly onto the sphere, same direction
        assert np.isclose(_tree_norm(clipped), clip, rtol=1e-4)


def test_clip_unchanged_below_bound():
    tree = {"a": jnp.array([0.3, -0.4]), "b": (jnp.zeros((2, 2)),)}
    clipped, norm = clip_jit(tree, 1.0)
    assert np.isclose(float(norm), 0.5)
    np.testing.assert_array_equal(np.asarray(clipped["a"]), np.asarray(tree["a"]))


def test_clip_zero_update_is_safe():
    tree = {"a": jnp.zeros((3,)), "b": jnp.zeros((2, 2))}
    clipped, norm = clip_jit(tree, 0.5)
    assert float(norm) == 0.0
    for x in jax.tree.leaves(clipped):
        assert np.all(np.isfinite(np.asarray(x))) and np.all(np.asarray(x) == 0)


def test_clip_under_vmap():
    batch = {"w": jnp.stack([jnp.full((4,), 10.0), jnp.zeros((4,)), jnp.full((4,), 0.1)])}
    clipped, norms = jax.jit(jax.vmap(clip_update, in_axes=(0, None)))(batch, 1.0)
    np.testing.assert_allclose(np.asarray(norms), [20.0, 0.0, 0.2], rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(clipped["w"]), axis=1), [1.0, 0.0, 0.2], rtol=1e-6)


def test_noise_std_and_normality():
    tree = {"a": jnp.zeros((100, 100)), "b": jnp.zeros((5000,))}
    std = 0.37
    noised = noise_jit(tree, std, jax.random.key(0))
    x = np.concatenate([np.asarray(v).ravel() for v in jax.tree.leaves(noised)])
    assert abs(x.mean()) < 4 * std / np.sqrt(x.size)
    assert abs(x.std() / std - 1) < 0.03
    assert stats.kstest(x / std, "norm").pvalue > 1e-3


def test_noise_keys_per_leaf_and_determinism():
    tree = {"a": jnp.zeros((4000,)), "b": jnp.zeros((4000,))}
    n1 = noise_jit(tree, 1.0, jax.random.key(1))
    n2 = noise_jit(tree, 1.0, jax.random.key(1))
    n3 = noise_jit(tree, 1.0, jax.random.key(2))
    np.testing.assert_array_equal(np.asarray(n1["a"]), np.asarray(n2["a"]))
    assert not np.allclose(np.asarray(n1["a"]), np.asarray(n3["a"]))
    # Leaves get independent noise: same-shaped leaves are not copies, and uncorrelated.
    a, b = np.asarray(n1["a"]), np.asarray(n1["b"])
    assert abs(np.corrcoef(a, b)[0, 1]) < 4 / np.sqrt(a.size)


def test_noise_zero_std_is_identity():
    tree = {"a": jnp.arange(5.0)}
    out = noise_jit(tree, 0.0, jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(out["a"]), np.arange(5.0))
