"""NeurFlow from Python: one class's circuit of the demo model, what it says, and how to keep it.

    python examples/quickstart.py [CLASS] [--out FOLDER]

CLASS is a Fashion-MNIST class index or name (default "Sneaker").  Takes ~10-30 s on 2 CPU
cores at these settings (the command line's defaults, tau 16, k 50, 50 IG steps, take longer).
"""

import argparse

import neurflow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cls", nargs="?", default="Sneaker", help="class index or name")
    parser.add_argument("--out", default=None, help="save the circuit here (Parquet tables)")
    args = parser.parse_args()
    cls = int(args.cls) if args.cls.isdigit() else args.cls

    model = neurflow.load_model("fashion-resnet")  # the demo model: weights shipped, nothing to train
    images = neurflow.load_images("fashion-mnist", model, class_index=cls, limit=24)
    circuit = neurflow.build_circuit(model, images, class_index=cls, tau=6, k=20, ig_steps=16, progress=False)

    print(f"circuit of class {circuit.class_index} ({circuit.class_name}), parameter set {circuit.identity.param_set}")
    for depth in circuit.depths:
        layer = circuit.layer_name(depth)
        print(f"  {layer:8s} critical neurons: {circuit.critical(depth)}  groups: {len(circuit.groups(depth))}")
    logit = circuit.critical(0)[0]
    top = [(r.lower_channel, round(r.importance, 4)) for r in circuit.core_of(0, logit)]
    print(f"  the logit's core neurons in {circuit.layer_name(1)} (channel, importance): {top}")
    for note in circuit.notes:
        print(f"  note: {note}")
    if args.out:
        print(f"saved to {circuit.save(args.out)}; reload with neurflow.Circuit.load(folder)")


if __name__ == "__main__":
    main()
