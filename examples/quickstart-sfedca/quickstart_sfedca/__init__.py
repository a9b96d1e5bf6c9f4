"""quickstart-sfedca: a Flower app that uses SpikeFed's client selection."""
