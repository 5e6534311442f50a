"""Export a trained model to ONNX, ExecuTorch or LiteRT, with its normalisation and post-processing in the graph.

The same command as ``mobilenetv2-dense export`` (the installed console script), kept at the repository root for
running from a checkout; the command itself is ``mobilenetv2_dense.commands.export``.

    python export.py --config configs/ssdlite_shapes_demo.yaml --ckpt_path runs/.../best.ckpt --format onnx \\
        --output runs/export/ssdlite_shapes.onnx
    python export.py --config configs/deeplabv3lite_shapes_demo.yaml --ckpt_path ... --format executorch --argmax

Beside the model it writes ``<output>.json``: the input and output contract, class names and ids, thresholds,
versions, and the parity figures against the eager model on the config's validation set (docs/export.md).
"""

from mobilenetv2_dense.commands.export import main

if __name__ == "__main__":
    main()
