import pytest
import torch
from torch import nn

from sceneclf.errors import BudgetError, ConfigError
from sceneclf.model.budget import Budget, Cost, build, count_macs, count_params, model_cost, summarize
from sceneclf.model.cnn import GlobalAvgPool2d, ModelConfig, SceneClassifier, SceneCNN
from sceneclf.model.frontend import FeatureConfig


@pytest.mark.parametrize("widths,k", [((16, 32, 64), 3), ((8,), 5), ((24, 48, 96, 128), 3), ((4, 4), 1)])
def test_param_count_matches_built_model(widths, k):
    cfg = ModelConfig(widths=widths, kernel_size=k)
    assert count_params(cfg) == sum(p.numel() for p in SceneCNN(cfg).parameters())


def test_any_input_length():
    model = SceneCNN(ModelConfig()).eval()
    for frames in (1, 7, 94, 300):
        assert model(torch.randn(2, 2, 40, frames)).shape == (2, 15)


def test_macs_from_flop_counter_match_hand_count():
    cfg = ModelConfig(widths=(8, 16), kernel_size=3, n_classes=4)
    # conv1: 40x10 output, 2->8, 3x3; pool -> 20x5; conv2: 2x... 8->16; head 16->4
    hand = 40 * 10 * 8 * 2 * 9 + 20 * 5 * 16 * 8 * 9 + 16 * 4
    assert count_macs(cfg, (40, 10)) == hand


def test_summary_rows_add_up():
    cfg = ModelConfig(widths=(16, 32))
    s = summarize(cfg, (40, 94))
    assert s.n_params == count_params(cfg)
    assert s.macs == count_macs(cfg, (40, 94))
    text = s.format()
    assert "blocks.0.0 (Conv2d)" in text and "[1, 16, 40, 94]" in text
    assert f"Total params: {count_params(cfg):,}" in text


def test_budget_refuses_with_both_numbers():
    cfg = ModelConfig(widths=(64, 128, 256))
    with pytest.raises(BudgetError, match=r"[\d,]+ parameters, over the budget of 128,000"):
        build(FeatureConfig(), cfg, Budget(), frames=94)
    assert Budget(max_params=10).violations(Cost(15, 0, 1.0)) == {"params": 5.0}
    assert Budget(max_params=10, max_macs=100).violations(Cost(5, 150, 1.0)) == {"params": -5.0, "macs": 50.0}


def test_invalid_model_config():
    with pytest.raises(ConfigError, match="kernel_size"):
        ModelConfig(kernel_size=4)
    with pytest.raises(ConfigError, match="widths"):
        ModelConfig(widths=())


def test_blocks_compute_conv_bn_relu_then_pool_exactly():
    """The blocks pool before their ReLU for speed; outputs and gradients must be those of the
    textbook Conv-BN-ReLU-MaxPool order, bit for bit (fails if BatchNorm or the pool move)."""
    torch.manual_seed(0)
    cfg = ModelConfig(widths=(8, 16), n_classes=4, dropout=0.0)
    ours = SceneCNN(cfg).train()
    textbook = []
    for i, block in enumerate(ours.blocks):
        conv, bn = block[0], block[1]
        layers = [conv, bn, nn.ReLU()] + ([nn.MaxPool2d(2, ceil_mode=True)] if i == 0 else [])
        textbook.append(nn.Sequential(*layers))
    x = torch.randn(4, 2, 40, 31)

    def run(blocks):
        out = ours.head(ours.pool(blocks(x.contiguous(memory_format=torch.channels_last))).flatten(1))
        grads = torch.autograd.grad(out.pow(2).sum(), list(ours.parameters()))
        return out, grads

    bn_state = {k: v.clone() for k, v in ours.state_dict().items()}
    out_a, grads_a = run(ours.blocks)
    ours.load_state_dict(bn_state)  # the same running statistics for the second pass
    out_b, grads_b = run(nn.Sequential(*textbook))
    assert torch.equal(out_a, out_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))


def test_fused_copy_predicts_like_the_model_and_leaves_it_trainable():
    torch.manual_seed(0)
    model = SceneClassifier(FeatureConfig(), ModelConfig(widths=(8, 16, 32)))
    model.train()
    for _ in range(3):  # running statistics and affine parameters away from their initial values
        model.forward_mel(torch.rand(8, 40, 94) * 10).sum().backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mel = torch.rand(6, 40, 94) * 10
    with torch.inference_mode():  # where `train.score` calls it
        fused = model.fused()
        assert torch.allclose(fused.forward_mel(mel), model.eval().forward_mel(mel), atol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules()) and not fused.training
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 3
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.train()
    model.forward_mel(mel).sum().backward()  # the original still trains
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_global_pool_is_adaptive_average_pooling(layout):
    x = torch.randn(3, 5, 7, 11).contiguous(memory_format=layout).requires_grad_()
    g = torch.randn(3, 5, 1, 1)
    ours, ref = GlobalAvgPool2d()(x), nn.AdaptiveAvgPool2d(1)(x)
    (ours_grad,), (ref_grad,) = torch.autograd.grad(ours, x, g), torch.autograd.grad(ref, x, g)
    assert ours.shape == ref.shape == (3, 5, 1, 1)
    assert torch.allclose(ours, ref, atol=1e-6) and torch.allclose(ours_grad, ref_grad, atol=1e-7)


@pytest.mark.parametrize("precision,bytes_per_param", [("fp32", 4), ("fp16", 2), ("int8", 1)])
def test_kb_budget_at_each_precision(precision, bytes_per_param):
    """1 kB = 1000 bytes as DCASE counts: a model exactly at the limit fits, one parameter more does not."""
    limit = Budget(max_params=10**9, max_kb=128, precision=precision)
    at_limit = 128_000 // bytes_per_param
    assert Cost(at_limit, 0, 1.0, precision).kb == 128.0
    limit.check(Cost(at_limit, 0, 1.0, precision))
    with pytest.raises(BudgetError) as info:
        limit.check(Cost(at_limit + 1, 0, 1.0, precision))
    assert f"{(at_limit + 1) * bytes_per_param / 1000:,.1f} kB of parameters at {precision}" in str(info.value)
    assert "over the budget of 128 kB (--max-kb)" in str(info.value)


def test_macs_per_second_budget_at_the_limit_and_over():
    limit = Budget(max_macs_per_second=30_000_000)
    limit.check(Cost(1000, 90_000_000, 3.0))
    with pytest.raises(BudgetError, match=r"30,000,001 MACs per second of audio, over the limit of 30,000,000"):
        limit.check(Cost(1000, 90_000_003, 3.0))


def test_macs_per_second_do_not_depend_on_the_input_length():
    cfg = ModelConfig(widths=(8, 16, 32))
    short, long = (model_cost(FeatureConfig(), cfg, frames) for frames in (94, 188))
    assert long.seconds == 2 * short.seconds and long.macs > 1.9 * short.macs
    assert long.macs_per_second == pytest.approx(short.macs_per_second, rel=0.05)


def test_bad_precision_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"^precision 'int4': use one of fp32, fp16, int8$"):
        Budget(precision="int4")
