"""The ClientApp: this app's own training, wrapped by SpikeFed's reply helpers."""

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from clients.replies import discard_reply, query_reply, train_with_statistics, upload_reply
from quickstart_sfedca.task import NUM_CLASSES, SpikingMLP, evaluate, load_partition, train

app = ClientApp()


def _setup(msg: Message, context: Context):
    cfg = context.run_config
    model = SpikingMLP(int(cfg["timesteps"]))
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    x, y = load_partition(int(context.node_config["partition-id"]), int(context.node_config["num-partitions"]),
                          float(cfg["dirichlet-alpha"]), int(cfg["seed"]))
    return cfg, model, x, y


@app.train()
def local_training(msg: Message, context: Context) -> Message:
    """Train on the local partition; SpikeFed's helper measures the firing statistics
    before and after, and keeps the weights when SFedCA runs its two phases."""
    cfg, model, x, y = _setup(msg, context)
    seed = int(cfg["seed"]) * 10_007 + int(msg.content["config"]["server-round"]) * 101 + context.node_config["partition-id"]
    return train_with_statistics(
        msg, context, model,
        lambda: train(model, x, y, int(cfg["local-epochs"]), float(cfg["lr"]), seed),
        inputs=x, labels=y, num_classes=NUM_CLASSES, timesteps=int(cfg["timesteps"]))


@app.train("upload")
def upload(msg: Message, context: Context) -> Message:
    """SFedCA's second phase: send the weights kept for this round."""
    return upload_reply(msg, context)


@app.train("discard")
def discard(msg: Message, context: Context) -> Message:
    """SFedCA's second phase, not chosen: drop the weights kept for this round."""
    return discard_reply(msg, context)


@app.query()
def local_loss(msg: Message, context: Context) -> Message:
    """Power-of-Choice asks for the global model's loss on the local data."""
    _, model, x, y = _setup(msg, context)
    return query_reply(msg, {**evaluate(model, x, y), "num-examples": len(y)})
