"""``sim.signals``: the current value of any signal, as nengo's ``SignalDict`` gives it."""

from collections.abc import Mapping

from nengo_onnx.runtime.host import read_signal


class SignalValues(Mapping):
    """A read-only mapping from Signals to their current values (nengo's tests read it).

    State signals come from the runtime's state, parameters from the program's
    parameter store, constants from their initial value. Values have the batch
    axis unless ``squeeze_batch`` (a Simulator without ``minibatch_size``).
    """

    def __init__(self, runtime, squeeze_batch=True):
        self.runtime = runtime
        self.squeeze_batch = squeeze_batch

    def __getitem__(self, sig):
        if not hasattr(sig, "base"):
            raise KeyError(sig)
        program = self.runtime.program
        dtype = program.signals.dtype_of(sig, program.dtype)
        value = read_signal(
            getattr(self.runtime, "store", {}),
            program.signals,
            sig,
            self.runtime.B,
            initial=lambda base: program.signals.initial_value(base, dtype),
        )
        return value[0] if self.squeeze_batch else value

    def __iter__(self):
        return iter(self.runtime.program.signals.bases)

    def __len__(self):
        return len(self.runtime.program.signals.bases)
