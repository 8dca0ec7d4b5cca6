"""Bit-packing round trip and sizes."""
import pytest
import torch

from squeeze.export.packing import pack_codes, unpack_codes


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8, 12])
def test_pack_roundtrip_and_size(bits: int) -> None:
    torch.manual_seed(bits)
    codes = torch.randint(0, 2 ** bits, (1001,))
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == (1001 * bits + 7) // 8
    assert torch.equal(unpack_codes(packed, bits, 1001), codes)


def test_pack_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        pack_codes(torch.tensor([16]), 4)
