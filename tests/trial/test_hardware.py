"""The MFU ceiling: measured in the compute dtype on every backend, once per process."""

import jax
import pytest

from autoresearch.trial import hardware


@pytest.fixture
def fresh_ceiling():
  hardware.peak_flops.cache_clear()
  yield
  hardware.peak_flops.cache_clear()  # the next caller measures this machine again


@pytest.mark.parametrize('backend,size', [('gpu', hardware.ACCELERATOR_CEILING_SIZE),
                                          ('tpu', hardware.ACCELERATOR_CEILING_SIZE),
                                          ('cpu', hardware.CPU_CEILING_SIZE)])
def test_the_ceiling_is_a_matmul_measured_once_in_the_compute_dtype(
    fresh_ceiling, monkeypatch, backend, size):
  calls = []
  monkeypatch.setattr(hardware, 'measure_matmul_flops',
                      lambda dtype, size: calls.append((dtype, size)) or 7e14)
  monkeypatch.setattr(jax, 'default_backend', lambda: backend)
  assert hardware.peak_flops('bfloat16') == 7e14   # not the datasheet's 989e12 of an H100
  assert hardware.peak_flops('bfloat16') == 7e14
  assert calls == [('bfloat16', size)]             # measured at the first call only
  hardware.peak_flops('float32')
  assert calls == [('bfloat16', size), ('float32', size)]


def test_a_real_ceiling_and_the_datasheet_of_an_unknown_device(fresh_ceiling):
  flops = hardware.measure_matmul_flops('float32', size=256, seconds=0.2)
  assert 1e8 < flops < 1e15
  assert hardware.datasheet_flops('float32') is None  # a CPU has no datasheet entry
