"""What the accelerator can do: its kind, the matmul ceiling MFU is measured against, and
the memory a compiled program needs on it.

MFU here is model FLOP/s over a *ceiling*: the datasheet dense peak for known
accelerators, or, on CPUs (whose peak depends on cores, clocks and SIMD width), the
FLOP/s of a large jitted matmul measured once per process.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp

# Dense peak FLOP/s by (device kind substring, dtype), from the vendors' datasheets
# (no sparsity). H100 SXM: 989 TFLOP/s bf16, 67 TFLOP/s fp32 (non-tensor-core).
_DATASHEET = {
    ('H200', 'bfloat16'): 989e12, ('H200', 'float32'): 67e12,
    ('H100', 'bfloat16'): 989e12, ('H100', 'float32'): 67e12,
    ('A100', 'bfloat16'): 312e12, ('A100', 'float32'): 19.5e12,
    ('TPU v4', 'bfloat16'): 275e12, ('TPU v5 lite', 'bfloat16'): 197e12,
    ('TPU v5p', 'bfloat16'): 459e12, ('TPU v6', 'bfloat16'): 918e12,
}


def device_kind() -> str:
  return jax.local_devices()[0].device_kind


def measure_matmul_flops(dtype: str = 'float32', size: int = 1024, seconds: float = 1.0) -> float:
  """FLOP/s of a jitted (size x size) @ (size x size) matmul on the default device,
  the best of repeated timings over about `seconds`."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.dtype(dtype))
  b = jax.random.normal(jax.random.key(1), (size, size), jnp.dtype(dtype))
  matmul = jax.jit(lambda x, y: x @ y)
  matmul(a, b).block_until_ready()
  best = float('inf')
  deadline = time.perf_counter() + seconds
  while time.perf_counter() < deadline or best == float('inf'):
    start = time.perf_counter()
    matmul(a, b).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * size ** 3 / best


@functools.lru_cache(maxsize=None)
def peak_flops(dtype: str = 'float32') -> float:
  """The ceiling for MFU: datasheet peak when the device is known, else measured."""
  kind = device_kind()
  for (name, dt), flops in _DATASHEET.items():
    if name in kind and dt == dtype:
      return flops
  return measure_matmul_flops(dtype)


def compiled_memory_gb(compiled) -> float:
  """GB one device needs to run `compiled` (a `jax.stages.Compiled`), from XLA's memory
  analysis: arguments + outputs + temporaries - donated aliases. A property of the
  program, not of the process's history; 0.0 where the backend gives no analysis."""
  try:
    stats = compiled.memory_analysis()
  except (NotImplementedError, RuntimeError):
    stats = None
  if stats is None:
    return 0.0
  argument, output, temp, alias = (getattr(stats, f'{name}_size_in_bytes', 0) or 0
                                   for name in ('argument', 'output', 'temp', 'alias'))
  return (argument + output + temp - alias) / 1e9
