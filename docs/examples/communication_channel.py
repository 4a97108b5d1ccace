"""A communication channel: a sine wave passed through two spiking ensembles.

The input ``Node(np.sin)`` depends only on time, so in the exported model it is
an input called ``stim``, fed with ``sin(t)`` (``nengo-onnx compile --save-inputs``
writes those values). The probes become outputs ``stim_probe``, ``a_out`` and
``b_out``. Compile and run it with::

    nengo-onnx compile docs/examples/communication_channel.py -o channel.onnx \\
        --save-inputs channel_inputs.npz
    nengo-onnx run channel.onnx --inputs channel_inputs.npz -o channel_probes.npz
"""

import nengo
import numpy as np


def build(n_neurons=100, seed=0):
    """The network: ``stim -> a -> b``, with filtered probes of all three."""
    with nengo.Network(label="communication channel", seed=seed) as net:
        stim = nengo.Node(np.sin, label="stim")
        a = nengo.Ensemble(n_neurons, dimensions=1, label="a")
        b = nengo.Ensemble(n_neurons, dimensions=1, label="b")
        nengo.Connection(stim, a)
        nengo.Connection(a, b)
        nengo.Probe(stim, label="stim_probe")
        nengo.Probe(a, synapse=0.01, label="a_out")
        nengo.Probe(b, synapse=0.01, label="b_out")
    return net


network = build()
