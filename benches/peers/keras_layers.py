"""Keras 3 itself as the spec of the layers the assignment's script imports: Conv2D without
activation, BatchNormalization, LeakyReLU, Activation('relu'), MaxPooling2D, a hidden
Dense(relu) and the final Dense(softmax, kernel_regularizer=l1).

Two jobs:

  fixture  Builds the small net `c4n,bn,lrelu,c8s2n,bn,relu,p,h16,f10` in Keras on 16 random
           32x32x3 images, with Keras' own initial weights, and writes a safetensors file
           (default tests/fixtures/keras_layers.safetensors) holding: the images and labels, the
           initial weights, the gradient of the first training step (GradientTape on the batch-
           mean cross-entropy + the L1 penalty, as `fit` computes it), the moving statistics
           after that step, the weights and moving statistics after STEPS Adam steps
           (Keras' defaults, lr 1e-3), and the per-sample probabilities and losses of a forward
           pass at those weights in inference mode (moving statistics) and training mode (batch
           statistics). Tensors are named as wgpu-cnn's checkpoints name them
           (`conv2d/kernel`, `batch_normalization/moving_mean`, ...: Keras' layer name and
           weight name). Then it runs `cargo test --release --test keras_layers -- --nocapture`
           against the new file, which compares our reference, fast CPU and GPU engines with it
           and prints the figures.
  train    20 epochs of the named `cifar_bn` net (the base net with BatchNormalization and
           LeakyReLU after each convolution) on the embedded CIFAR-10 subset (assets/cifar10),
           with the assignment's settings (Adam, batch 128, validation_split=0.1, L1 1e-4 on the
           final layer): prints its test accuracy, to set beside `wgpu-cnn train --model
           cifar_bn` on the same images.

Set-up: ../shared/peers/README.md (python3 -m venv /tmp/peers/venv && pip install tensorflow-cpu
numpy safetensors). Run from the repository root:
  /tmp/peers/venv/bin/python benches/peers/keras_layers.py fixture
  /tmp/peers/venv/bin/python benches/peers/keras_layers.py train
"""
import argparse
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")

import numpy as np  # noqa: E402

FIXTURE_ARCH = "c4n,bn,lrelu,c8s2n,bn,relu,p,h16,f10"
CIFAR_BN = "c16n,bn,lrelu,c16s2n,bn,lrelu,c32n,bn,lrelu,c32s2n,bn,lrelu,d0.5,f10"
STEPS = 5
L1_FIXTURE = 1e-3


def keras_model(arch, l1):
    """Keras layers for one of our architecture strings (the tokens this script uses)."""
    import keras
    from keras import layers

    out = [keras.Input((32, 32, 3))]
    for token in arch.split(","):
        if token == "bn":
            out.append(layers.BatchNormalization())
        elif token == "lrelu":
            out.append(layers.LeakyReLU())
        elif token == "relu":
            out.append(layers.Activation("relu"))
        elif token == "p":
            out.append(layers.MaxPooling2D((2, 2)))
        elif token.startswith("d"):
            out.append(layers.Dropout(float(token[1:])))
        elif token.startswith("c"):
            body, linear = (token[1:-1], True) if token.endswith("n") else (token[1:], False)
            filters, _, stride = body.partition("s")
            out.append(layers.Conv2D(int(filters), (3, 3), strides=int(stride or 1), padding="same",
                                     activation=None if linear else "relu"))
        elif token.startswith("h"):
            body, linear = (token[1:-1], True) if token.endswith("n") else (token[1:], False)
            if not any(isinstance(l, layers.Flatten) for l in out[1:]):
                out.append(layers.Flatten())
            out.append(layers.Dense(int(body), activation=None if linear else "relu"))
        elif token.startswith("f"):
            if not any(isinstance(l, layers.Flatten) for l in out[1:]):
                out.append(layers.Flatten())
            out.append(layers.Dense(int(token[1:]), activation="softmax",
                                    kernel_regularizer=keras.regularizers.l1(l1)))
        else:
            raise SystemExit(f"unknown token {token}")
    return keras.Sequential(out)


def named_weights(model, trainable=None):
    """{ "layer/weight": array } in Keras' order."""
    out = {}
    for layer in model.layers:
        for w in layer.weights:
            if trainable is None or w.trainable == trainable:
                out[f"{layer.name}/{w.name}"] = np.array(w.numpy(), dtype=np.float32)
    return out


def fixture(path):
    import keras
    import tensorflow as tf
    from safetensors.numpy import save_file

    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(11)
    n = 16
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    x = images.astype(np.float32) / np.float32(255.0)
    y = keras.utils.to_categorical(labels, 10).astype(np.float32)

    model = keras_model(FIXTURE_ARCH, L1_FIXTURE)
    model.summary()
    optimizer = keras.optimizers.Adam(learning_rate=1e-3)
    tensors = {"images": images, "labels": labels}
    tensors.update({f"initial/{k}": v for k, v in named_weights(model).items()})

    def loss_and_grads():
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            loss = tf.reduce_mean(keras.losses.categorical_crossentropy(y, probs)) + tf.add_n(model.losses)
        return loss, tape.gradient(loss, model.trainable_variables)

    names = [f"{l.name}/{w.name}" for l in model.layers for w in l.trainable_weights]
    for step in range(STEPS):
        loss, grads = loss_and_grads()
        if step == 0:
            tensors.update({f"gradient/{k}": np.array(g, np.float32) for k, g in zip(names, grads)})
            tensors.update({f"state1/{k}": v for k, v in named_weights(model, trainable=False).items()})
            print(f"step 1 loss {float(loss):.6f}")
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
    tensors.update({f"trained/{k}": v for k, v in named_weights(model).items()})

    # Inference first: a training-mode call moves the moving statistics.
    for mode, training in (("inference", False), ("training", True)):
        probs = np.array(model(x, training=training), np.float32)
        per_sample = np.array(keras.losses.categorical_crossentropy(y, probs), np.float32)
        tensors[f"{mode}/probabilities"] = probs
        tensors[f"{mode}/losses"] = per_sample
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    meta = {"architecture": FIXTURE_ARCH, "steps": str(STEPS), "l1": str(L1_FIXTURE), "batch": str(n),
            "keras": keras.__version__, "tensorflow": tf.__version__}
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, path, metadata=meta)
    print(f"wrote {path}: {len(tensors)} tensors ({os.path.getsize(path):,} bytes), Keras {keras.__version__}, "
          f"TensorFlow {tf.__version__}")
    env = dict(os.environ, KERAS_LAYERS_FIXTURE=os.path.abspath(path))
    command = ["cargo", "test", "--release", "--test", "keras_layers", "--", "--nocapture", "--test-threads", "1"]
    print("$", " ".join(command))
    return subprocess.call(command, env=env)


def load_cifar(folder):
    """The CIFAR-10 binary batches in `folder` as NHWC uint8 arrays."""
    def read(name):
        raw = np.fromfile(os.path.join(folder, name), dtype=np.uint8).reshape(-1, 3073)
        return raw[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), raw[:, 0]
    parts = [read(f"data_batch_{i}.bin") for i in range(1, 6)]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return train, read("test_batch.bin")


def train(folder, epochs, arch, seed):
    import keras

    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test) = load_cifar(folder)
    x_train, x_test = x_train.astype(np.float32) / 255.0, x_test.astype(np.float32) / 255.0
    y_train, y_test = keras.utils.to_categorical(y_train, 10), keras.utils.to_categorical(y_test, 10)
    model = keras_model(arch, 1e-4)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    model.summary()
    start = time.time()
    model.fit(x_train, y_train, batch_size=128, epochs=epochs, validation_split=0.1, verbose=2)
    seconds = time.time() - start
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"RESULT {arch}: {len(x_train)} training images, {epochs} epochs in {seconds:.1f} s; "
          f"test loss {loss:.4f}, test accuracy {accuracy:.4f} (seed {seed})")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="job", required=True)
    f = sub.add_parser("fixture")
    f.add_argument("--out", default="tests/fixtures/keras_layers.safetensors")
    t = sub.add_parser("train")
    t.add_argument("--data", default="assets/cifar10")
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--model", default=CIFAR_BN)
    t.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if args.job == "fixture":
        sys.exit(fixture(args.out))
    train(args.data, args.epochs, args.model, args.seed)


if __name__ == "__main__":
    main()
