"""How often a run's clean_model.onnx agrees with PyTorch on the same images.

The reference is the zoo member's PyTorch network (its weights from export_archzoo.py) followed by
the head tcore trained, read from clean_model.onnx (the nodes between the encoder's embedding and
the logits, evaluated in numpy). The images are the zoo's 1,000 validation images, written as an
image folder whose class folders are PyTorch's predictions; `tcore eval` then runs clean_model.onnx
in ONNX Runtime through tcore's own preprocessing, and its accuracy on that folder is the argmax
agreement. Channels the filter masked are not in the reference, so a masked encoder agrees less.

  /usr/bin/python3 testdata/archzoo/agree.py --run RUNDIR --member r18-32 [--zoo runs/archzoo] [--tcore bin/tcore]
"""
import argparse, json, os, subprocess, sys, tempfile

import numpy as np
import onnx
from onnx import numpy_helper
import torch
from PIL import Image

import export_archzoo as zoo


def head_of(model_path):
    """The chain of nodes from the embedding to the logits, and the embedding's name."""
    m = onnx.load(model_path)
    g = m.graph
    init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    chain, t = [], g.output[0].name
    while t in producer and producer[t].name.startswith("tcore/"):
        n = producer[t]
        chain.append(n)
        t = next(i for i in n.input if i not in init)
    return list(reversed(chain)), t, init


def run_head(chain, emb_name, init, emb):
    vals = dict(init)
    vals[emb_name] = emb
    for n in chain:
        x = [vals[i] for i in n.input]
        at = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        op = n.op_type
        if op == "Gemm":
            a, b = x[0], x[1]
            if at.get("transA"):
                a = a.T
            if at.get("transB"):
                b = b.T
            y = at.get("alpha", 1.0) * a @ b
            if len(x) > 2:
                y = y + at.get("beta", 1.0) * x[2]
        elif op == "MatMul":
            y = x[0] @ x[1]
        elif op == "Add":
            y = x[0] + x[1]
        elif op == "Sub":
            y = x[0] - x[1]
        elif op == "Mul":
            y = x[0] * x[1]
        elif op == "Div":
            y = x[0] / x[1]
        elif op == "Relu":
            y = np.maximum(x[0], 0)
        else:
            sys.exit(f"head node {n.name}: op {op} not evaluated here")
        vals[n.output[0]] = y.astype(np.float32)
    return vals[chain[-1].output[0]]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--member", required=True)
    ap.add_argument("--zoo", default=os.path.join(zoo.root, "runs", "archzoo"))
    ap.add_argument("--tcore", default=os.path.join(zoo.root, "bin", "tcore"))
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(zoo.root), "shared"))
    a = ap.parse_args()
    torch.set_num_threads(2)
    m = next(m for m in zoo.MEMBERS if m["name"] == a.member)
    r = zoo.WEIGHTS[m["weights"]]
    st = torch.load(os.path.join(a.zoo, m["weights"] + ".pt"))
    net, _ = zoo.body(r["arch"])
    net.load_state_dict(st["body"])
    data = zoo.load_data(a.shared)
    if r.get("bn_recalibrate"):
        zoo.recalibrate(net, data, r["size"])  # as the export did
    net.eval()
    _, (xv, _) = data
    with torch.no_grad():
        emb = torch.cat([net(zoo.norm(zoo.to_size(xv[k:k + 100], r["size"]))) for k in range(0, len(xv), 100)]).numpy()
    model = os.path.join(a.run, "clean_model.onnx")
    chain, emb_name, init = head_of(model)
    logits = run_head(chain, emb_name, init, emb)
    pred = logits.argmax(1)
    classes = logits.shape[1]
    missing = sorted(set(range(classes)) - set(pred.tolist()))
    if missing:
        sys.exit(f"PyTorch predicts no image of classes {missing}: an image folder cannot label them; use more images")
    with tempfile.TemporaryDirectory() as d:
        u8 = (xv * 255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        for i, (img, c) in enumerate(zip(u8, pred)):
            os.makedirs(os.path.join(d, f"c{c:03d}"), exist_ok=True)
            Image.fromarray(img).save(os.path.join(d, f"c{c:03d}", f"{i:05d}.png"))
        out = subprocess.run([a.tcore, "eval", "--model", model, "--data", d], capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"tcore eval: exit {out.returncode}: {out.stderr}")
        ev = json.loads(out.stdout)
    print(json.dumps({"member": a.member, "run": a.run, "images": len(pred), "head_nodes": len(chain),
                      "agreement": ev["accuracy"]}))


if __name__ == "__main__":
    main()
