import math

import pytest
import torch

from smalto.errors import SmaltoError
from smalto.tokenizers.evaluate import code_stats
from smalto.tokenizers.quantize import LookupFreeQuantizer, VectorQuantizer, build_quantizer


def _identity(q):
    """Make the projections of a quantizer the identity, to look at the quantisation itself."""
    with torch.no_grad():
        for lin in (q.proj_in, q.proj_out):
            lin.weight.copy_(torch.eye(lin.weight.shape[0], lin.weight.shape[1]))
            lin.bias.zero_()
    return q


@pytest.mark.parametrize("kind", ["vq", "lfq"])
def test_interface_shapes_and_codes_to_z(kind):
    q = build_quantizer(kind, dim=16, codebook_size=64).eval()
    z = torch.randn(2, 5, 5, 16)
    out = q(z)
    assert out.z_q.shape == z.shape and out.codes.shape == (2, 5, 5) and out.aux_loss.ndim == 0
    assert out.codes.dtype == torch.int64 and 0 <= out.codes.min() and out.codes.max() < q.codebook_size
    torch.testing.assert_close(q.codes_to_z(out.codes), out.z_q)


@pytest.mark.parametrize("kind", ["vq", "lfq"])
def test_straight_through_gradient_is_the_identity(kind):
    q = _identity(VectorQuantizer(8, 32, code_dim=8) if kind == "vq" else LookupFreeQuantizer(8, bits=8))
    z = torch.randn(4, 8)
    if kind == "vq":
        z = torch.nn.functional.normalize(z, dim=-1)  # VQ normalises; the identity holds on the sphere
    z.requires_grad_(True)
    w = torch.randn(4, 8)
    (q(z).z_q * w).sum().backward()
    if kind == "lfq":
        torch.testing.assert_close(z.grad, w)
    else:  # d normalize(z)/dz at |z| = 1 is the projection orthogonal to z
        expected = w - (w * z).sum(-1, keepdim=True) * z
        torch.testing.assert_close(z.grad, expected.detach())


def test_lfq_codes_are_exactly_plus_minus_one():
    q = _identity(LookupFreeQuantizer(6, bits=6)).eval()
    z = torch.randn(100, 6)
    out = q(z)
    assert set(out.z_q.unique().tolist()) == {-1.0, 1.0}
    torch.testing.assert_close(out.z_q, torch.sign(z))
    bits = ((out.codes[:, None] >> torch.arange(6)) & 1) * 2 - 1
    torch.testing.assert_close(bits.float(), torch.sign(z))


def test_usage_and_perplexity_count_correctly():
    usage, perplexity = code_stats(torch.tensor([0, 0, 1, 3]), codebook_size=8)
    assert usage == pytest.approx(37.5)
    assert perplexity == pytest.approx(math.exp(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))))
    assert code_stats(torch.arange(16), 16) == pytest.approx((100.0, 16.0))


def test_dead_code_restart_revives_codes():
    torch.manual_seed(0)
    q = VectorQuantizer(dim=8, codebook_size=64, code_dim=8, usage_decay=0.9)
    data = torch.randn(512, 8) * 0.1 + torch.tensor([3.0] + [0.0] * 7)  # a tight cluster
    q.eval()
    before = q(data).codes.unique().numel()
    q.train()
    for _ in range(60):
        q(data)
    q.eval()
    after = q(data).codes.unique().numel()
    assert before < 8 and after > 3 * before


def test_lfq_entropy_loss_spreads_codes():
    torch.manual_seed(0)
    q = LookupFreeQuantizer(dim=4, bits=4, entropy_weight=1.0, commit_weight=0.0, inv_temperature=1.0)
    z = torch.randn(256, 4) * 0.1 + 1.0  # everything starts in one corner
    opt = torch.optim.Adam(q.proj_in.parameters(), lr=0.05)
    q.eval()
    before = q(z).codes.unique().numel()
    q.train()
    for _ in range(100):
        loss = q(z).aux_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    q.eval()
    assert before <= 2 and q(z).codes.unique().numel() >= 10


def test_bad_quantizer_config_is_a_clear_error():
    with pytest.raises(SmaltoError, match="power-of-two"):
        build_quantizer("lfq", 8, 500)
    with pytest.raises(SmaltoError, match="unknown quantizer"):
        build_quantizer("fsq", 8, 512)
