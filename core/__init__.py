"""The ground layer: the run-config vocabulary and the wire protocol. Imports nothing of SpikeFed's."""
