"""With ``skip_from_start=0, frequency=1, min_delta=0``, CkptCallback saves on exactly the
epochs where ``keras.callbacks.ModelCheckpoint(save_best_only=True)`` saves.

Finite values only, where the two differ on purpose: NaN and infinities never improve a
basis key (the core's rule), while ``ModelCheckpoint`` (Keras 3.15) saves a first epoch
whose value is NaN, and then, its best being NaN, never saves again.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cvml_core.keras_compat import keras

# No subnormal floats: Keras 3.12 compares with TensorFlow ops, which flush them to zero
# on the CPU (-1.4e-45 then does not lose to 0.0).
values = st.lists(
    st.floats(-5, 5, allow_nan=False, allow_subnormal=False, width=32), min_size=1, max_size=8
)


def _keras_saves(model, folder, mode, sequence):
    cb = keras.callbacks.ModelCheckpoint(
        str(folder / "e{epoch}.weights.h5"), monitor="val_loss", mode=mode,
        save_best_only=True, save_weights_only=True, verbose=0,
    )
    cb.set_model(model)
    cb.on_train_begin({})
    for epoch, value in enumerate(sequence):
        cb.on_epoch_end(epoch, {"val_loss": value})
    return sorted(int(p.name[1:].split(".")[0]) for p in folder.glob("e*.weights.h5"))


@settings(max_examples=30, deadline=None)
@given(sequence=values, mode=st.sampled_from(["min", "max"]))
def test_the_same_epochs_save_as_with_model_checkpoint(tmp_path_factory, sequence, mode):
    from cvml_ckpt import CkptCallback

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    folder = tmp_path_factory.mktemp("keras")
    ours = CkptCallback(tmp_path_factory.mktemp("cvml"), {"val_loss": mode})
    saved = [
        epoch + 1
        for epoch, value in enumerate(sequence)
        if ours.policy.update(epoch + 1, {"val_loss": value})
    ]
    assert saved == _keras_saves(model, folder, mode, sequence)
