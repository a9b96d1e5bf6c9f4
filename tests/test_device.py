"""Where workloads run: the CPU, or CUDA when num-gpus > 0 and a GPU is visible.

The tests marked `gpu` need CUDA; `scripts/gpu-check.sh` runs them on a GPU machine.
"""

import logging
import math

import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from spikingjelly.activation_based import functional

from clients.replies import executor, train_reply
from core.protocol import EXECUTOR, SERVER_ROUND
from data import split_of
from models import WORKLOADS, device, get_workload
from models.spiking_cnn import SpikingCNN
from server.config import ConfigError, load_config

CUDA = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not CUDA, reason="torch sees no CUDA device here (scripts/gpu-check.sh runs these on a GPU machine)")


def test_no_gpu_asked_means_the_cpu():
    assert device.torch_device(load_config({})) == torch.device("cpu")


@pytest.mark.skipif(CUDA, reason="checks the CPU fallback, which needs a host without a GPU")
def test_a_gpu_asked_for_where_none_is_visible_runs_on_the_cpu_and_says_so_once(caplog):
    device._said.clear()
    cfg = load_config({"num-gpus": 0.5})
    with caplog.at_level(logging.WARNING, logger="flwr"):
        assert device.torch_device(cfg) == torch.device("cpu")
        assert get_workload("classify").build_model(cfg, split_of(cfg).spec).net.fc.weight.device.type == "cpu"
    said = [r.getMessage() for r in caplog.records if "no GPU" in r.getMessage()]
    assert said == ["num-gpus=0.5 but torch sees no GPU on this host; running on the CPU"]


@pytest.mark.parametrize("overrides, fragment", [
    ({"neuron-backend": "cupy"}, "neuron-backend='cupy' is unknown; accepted: auto, cuda, triton, torch"),
    ({"ray-address": "head node"}, "ray-address='head node' is not a Ray address"),
])
def test_bad_device_keys_get_one_line(overrides, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(overrides)
    assert fragment in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("address", ["auto", "127.0.0.1:6379", "ray://head.example:10001", "head-0.cluster:6379"])
def test_ray_addresses_are_accepted(address):
    assert load_config({"ray-address": address}).ray_address == address


def test_a_train_reply_says_where_it_ran(task_identity):
    model = SpikingCNN(1, 8, 10, timesteps=2)
    msg = Message(RecordDict({"config": ConfigRecord({SERVER_ROUND: 1})}), dst_node_id=1, message_type="train")
    reply = train_reply(msg, Context(1, 1, {}, RecordDict(), {}), model.state_dict(), {"num-examples": 3})
    where = reply.content.config_records[EXECUTOR]
    assert where["device"] == "cpu" and where["host"] == executor(torch.device("cpu"))["host"] != ""


@pytest.mark.gpu
@needs_gpu
def test_the_spiking_cnn_forward_and_backward_on_cuda_match_the_cpu(monkeypatch):
    # TF32 convolutions (cuDNN's default) round to ~1e-3: compare in full float32
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(0)
    cpu = SpikingCNN(1, 8, 10, timesteps=4)
    gpu = SpikingCNN(1, 8, 10, timesteps=4).cuda()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.rand(16, 1, 8, 8)
    results = []
    for model, inputs in ((cpu, x), (gpu, x.cuda())):
        functional.reset_net(model)
        out = model(inputs)
        out.mean().backward()
        results.append((out.detach().cpu(), model.net.conv1.weight.grad.cpu()))
    (out_cpu, grad_cpu), (out_gpu, grad_gpu) = results
    # spikes are thresholded: a membrane within float error of the threshold may flip one
    assert (out_cpu != out_gpu).float().mean() < 0.01
    assert torch.allclose(grad_cpu, grad_gpu, rtol=1e-3, atol=1e-5)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_one_local_update_of_each_workload_runs_on_cuda(workload, task_identity):
    """What the ClientApp does in a round (clients/app.py local_update), on 64 digits."""
    cfg = load_config({"workload": workload, "num-gpus": 1.0, "local-epochs": 1})
    split = split_of(cfg)
    data = (split.x_train[:64], split.y_train[:64])
    plugin = get_workload(workload)
    model = plugin.build_model(cfg, split.spec)
    assert next(model.parameters()).is_cuda
    before = plugin.firing_statistics(model, data, cfg, split.spec.num_classes)
    metrics = plugin.train(model, data, cfg, seed=0)
    after = plugin.firing_statistics(model, data, cfg, split.spec.num_classes)
    assert math.isfinite(metrics["train-loss"]) and next(model.parameters()).is_cuda
    assert before.rates.keys() == after.rates.keys() and any(any(r) for r in after.rates.values())
    msg = Message(RecordDict({"config": ConfigRecord({SERVER_ROUND: 1})}), dst_node_id=1, message_type="train")
    reply = train_reply(msg, Context(1, 1, {}, RecordDict(), {}), model.state_dict(), {"num-examples": 64},
                        device.model_device(model))
    assert reply.content.config_records[EXECUTOR]["device"].startswith("cuda")
