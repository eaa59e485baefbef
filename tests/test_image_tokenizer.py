import numpy as np
import pytest
import torch

from smalto.data import ShapesWorld
from smalto.errors import SmaltoError
from smalto.tokenizers.image import ImageTokenizer, ImageTokenizerConfig
from smalto.training.tokenizer import TokenizerTrainConfig, train_image_tokenizer

IMAGES = ShapesWorld(seed=3, split="all").images(0, 8)


@pytest.mark.parametrize("kind", ["vq", "lfq"])
def test_encode_decode_shapes(kind):
    tok = ImageTokenizer(ImageTokenizerConfig(quantizer=kind)).eval()
    codes = tok.encode(IMAGES)
    assert codes.shape == (8, 8, 8) and codes.dtype == torch.int64
    assert 0 <= codes.min() and codes.max() < tok.codebook_size
    out = tok.decode(codes)
    assert out.shape == IMAGES.shape and out.dtype == np.uint8


@pytest.mark.parametrize("kind", ["vq", "lfq"])
def test_save_load_gives_identical_codes(kind, tmp_path):
    torch.manual_seed(0)
    tok = ImageTokenizer(ImageTokenizerConfig(quantizer=kind, codebook_size=64)).eval()
    tok.save(tmp_path)
    again = ImageTokenizer.load(tmp_path)
    assert again.cfg == tok.cfg
    assert torch.equal(again.encode(IMAGES), tok.encode(IMAGES))
    assert np.array_equal(again.decode(tok.encode(IMAGES)), tok.decode(tok.encode(IMAGES)))


@pytest.mark.parametrize("kind", ["vq", "lfq"])
def test_a_few_seconds_of_training_lower_the_loss(kind):
    torch.manual_seed(0)
    cfg = TokenizerTrainConfig(steps=60, batch_size=8, warmup=5, log_every=5,
                               image=ImageTokenizerConfig(quantizer=kind, channels=(16, 32, 32), codebook_size=64))
    world = ShapesWorld(seed=0, split="all")
    batches = (world.images(i * 8, 8) for i in range(10**6))
    log = train_image_tokenizer(ImageTokenizer(cfg.image), batches, cfg, progress=False)
    first, last = np.mean([r["recon"] for r in log[:2]]), np.mean([r["recon"] for r in log[-2:]])
    assert last < 0.5 * first


def test_wrong_image_shape_is_a_clear_error():
    tok = ImageTokenizer().eval()
    with pytest.raises(SmaltoError, match=r"\[B, 32, 32, 3\]"):
        tok.encode(np.zeros((1, 16, 16, 3), np.uint8))


def test_loading_bad_directories_is_a_clear_error(tmp_path):
    with pytest.raises(SmaltoError, match="missing"):
        ImageTokenizer.load(tmp_path)
    ImageTokenizer(ImageTokenizerConfig(codebook_size=64)).save(tmp_path)
    (tmp_path / "image.json").write_text('{"codebook_size": 128}')  # config no longer fits the weights
    with pytest.raises(SmaltoError, match="do not fit|not an image tokenizer"):
        ImageTokenizer.load(tmp_path)


def test_config_validation():
    with pytest.raises(SmaltoError, match="multiple"):
        ImageTokenizerConfig(image_size=30)


def test_shipped_default_meets_the_targets():
    from smalto.tokenizers import load_tokenizers
    from smalto.tokenizers.evaluate import evaluate_image_tokenizer

    tok = load_tokenizers()
    images = ShapesWorld(seed=99, split="all").images(0, 1000)  # scenes it was not trained on
    metrics, _ = evaluate_image_tokenizer(tok.image, images)
    assert metrics.psnr >= 28
    assert metrics.usage >= 90
    assert metrics.verifier_agreement >= 99
    text = "a small red circle at the top left"
    assert tok.text.decode(tok.text.encode(text)) == text
