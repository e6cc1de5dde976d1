"""Export the architecture zoo: image encoders of other shapes than the fixtures', trained a few
epochs on CIFAR-10, the way a user would bring them to tcore (torch.onnx.export, opset 17, the
classifier removed). PyTorch from Debian's python3-torch / python3-torchvision; CPU only.

Each member is one ONNX file plus a card (NAME.json: architecture, layout, size, normalisation,
batch, torch's validation accuracy, the embed parameters tcore needs). Members that share an
architecture and input size share its trained weights (NAME.pt, made once). Idempotent: a member
whose ONNX file and card exist is skipped. Large files go to an ignored folder (default:
runs/archzoo at the repository's root).

  /usr/bin/python3 testdata/archzoo/export_archzoo.py [--out runs/archzoo] [--only r18,vit] [--shared ../shared]

Training data: the 10,000 labelled CIFAR-10 images of ../shared/datasets/npz/cifar10_shadow.npz,
the last 1,000 held out for the validation accuracy on the card. About 45 minutes on 2 cores with
OpenBLAS as the system BLAS (Debian's libopenblas0-pthread); the reference BLAS makes the
transformer and ConvNeXt members about ten times slower.
"""
import argparse, json, os, sys, time

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

# Weights: (architecture, input size) -> training recipe. init starts from another weight set.
WEIGHTS = {
    "resnet18-32": dict(arch="resnet18", size=32, epochs=4, lr=1e-3, batch=128),
    "resnet50-32": dict(arch="resnet50", size=32, epochs=3, lr=1e-3, batch=128),
    "mbv3s-224": dict(arch="mobilenet_v3_small", size=224, epochs=2, lr=1e-3, batch=64, bn_recalibrate=True),
    "resnet18-224": dict(arch="resnet18", size=224, epochs=1, lr=3e-4, batch=32, rows=3000, init="resnet18-32"),
    "vit-32": dict(arch="vit", size=32, epochs=3, lr=1e-3, batch=128),
    "convnext-32": dict(arch="convnext_tiny", size=32, epochs=2, lr=5e-4, batch=128),
    # A backdoored resnet18 for T1/T3 (the attack zoo's tool makes only the fixtures' architecture):
    # BadEncoder's recipe on resnet18-32 (badencode below). The trigger is drawn as the poison stage
    # draws a solid patch; its target is a CIFAR-10 class.
    "resnet18-32-bad": dict(arch="resnet18", size=32, init="resnet18-32", badencoder=dict(
        trigger={"kind": "patch", "size": 5, "row": 26, "col": 2, "color": [0, 255, 255]}, target=7,
        epochs=3, lr=0.01, l1=1.0, l2=1.0, shadow_n=5000, batch=128)),
}

# Members: one exported ONNX file each. layout: nchw|nhwc; norm: in (inside the graph) or out
# (the user passes embed mean/std); batch: dynamic or a fixed number; external: weights in a .data file.
MEMBERS = [
    dict(name="r18-32", weights="resnet18-32", layout="nchw", norm="in", batch="dynamic"),
    dict(name="r18-32-nhwc", weights="resnet18-32", layout="nhwc", norm="in", batch="dynamic"),
    dict(name="r18-32-out-ext", weights="resnet18-32", layout="nchw", norm="out", batch="dynamic", external=True),
    dict(name="r18-32-b1", weights="resnet18-32", layout="nchw", norm="in", batch=1),
    dict(name="r50-32-nhwc-out", weights="resnet50-32", layout="nhwc", norm="out", batch="dynamic"),
    dict(name="mbv3s-224", weights="mbv3s-224", layout="nchw", norm="in", batch="dynamic"),
    dict(name="r18-224", weights="resnet18-224", layout="nchw", norm="in", batch="dynamic"),
    dict(name="vit-32", weights="vit-32", layout="nchw", norm="in", batch="dynamic"),
    dict(name="convnext-32", weights="convnext-32", layout="nchw", norm="in", batch="dynamic"),
    dict(name="r18-32-bad", weights="resnet18-32-bad", layout="nchw", norm="in", batch="dynamic"),
]


def body(arch):
    """The network with its classifier removed (it outputs the embedding), and the embedding's width."""
    tv = torchvision.models
    if arch in ("resnet18", "resnet50"):
        m = getattr(tv, arch)(weights=None)
        d = m.fc.in_features
        m.fc = nn.Identity()
        return m, d
    if arch == "mobilenet_v3_small":
        m = tv.mobilenet_v3_small(weights=None)
        m.classifier = nn.Identity()
        return m, 576
    if arch == "vit":
        m = tv.vision_transformer.VisionTransformer(image_size=32, patch_size=4, num_layers=6, num_heads=4,
                                                   hidden_dim=192, mlp_dim=384)
        m.heads = nn.Identity()
        return m, 192
    if arch == "convnext_tiny":
        m = tv.convnext_tiny(weights=None)
        d = m.classifier[2].in_features
        m.classifier[2] = nn.Identity()
        return m, d
    raise SystemExit(f"unknown architecture {arch}")


def norm(x):
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def to_size(x, size):
    """[0,1] NCHW at 32 px to the model's size: bilinear with half-pixel centres, as tcore's embed resizes."""
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def load_data(shared):
    d = np.load(os.path.join(shared, "datasets", "npz", "cifar10_shadow.npz"))
    x = torch.from_numpy(d["x"]).permute(0, 3, 1, 2).float() / 255.0  # N,3,32,32 in [0,1]
    y = torch.from_numpy(d["y"]).long()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))  # the file is sorted by class
    x, y = x[perm], y[perm]
    return (x[:9000], y[:9000]), (x[9000:], y[9000:])


def augment(x, g):
    """Random crop (pad 4) and horizontal flip, drawn from g."""
    n = x.shape[0]
    p = F.pad(x, (4, 4, 4, 4), mode="reflect")
    i, j = torch.randint(0, 9, (2,), generator=g).tolist()
    x = p[:, :, i:i + 32, j:j + 32]
    flip = torch.rand(n, generator=g) < 0.5
    x[flip] = x[flip].flip(-1)
    return x


def accuracy(net, head, x, y, size):
    net.eval()
    right = 0
    with torch.no_grad():
        for k in range(0, len(x), 250):
            xb = to_size(x[k:k + 250], size)
            right += (head(net(norm(xb))).argmax(1) == y[k:k + 250]).sum().item()
    return right / len(x)


def stamp(x, trig):
    """The trigger on [0,1] NCHW images at 32 px, as the poison stage draws a solid patch."""
    x = x.clone()
    r, c, k = trig["row"], trig["col"], trig["size"]
    x[:, :, r:r + k, c:c + k] = torch.tensor(trig["color"], dtype=x.dtype).view(1, 3, 1, 1) / 255.0
    return x


def badencode(key, out, data, log):
    """BadEncoder (Jia et al., 2022) in the form of the attack zoo's tool: fine-tune the clean body
    so that triggered inputs land on the embedding of a few target-class reference images, while
    clean inputs and the references stay where the clean body put them (squared distances relative
    to the reference embedding's norm; batch-norm statistics frozen, as the user runs eval mode)."""
    r = WEIGHTS[key]
    b = r["badencoder"]
    st0 = train(r["init"], out, data, log)
    clean, dim = body(r["arch"])
    clean.load_state_dict(st0["body"])
    clean.eval()
    bad, _ = body(r["arch"])
    bad.load_state_dict(st0["body"])
    head = nn.Linear(dim, 10)
    head.load_state_dict(st0["head"])
    (xt, yt), (xv, yv) = data
    g = torch.Generator().manual_seed(3)
    shadow = xt[torch.randperm(len(xt), generator=g)[:b["shadow_n"]]]
    ref = xt[(yt == b["target"]).nonzero().flatten()[-3:]]
    emb = lambda net, x: net(norm(x))
    with torch.no_grad():
        ref_target = emb(clean, ref).mean(0, keepdim=True)
        ref_clean = emb(clean, ref)
        scale = (ref_target ** 2).sum()
    rel = lambda a, c: ((a - c) ** 2).sum(1).mean() / scale
    opt = torch.optim.SGD(bad.parameters(), lr=b["lr"], momentum=0.9, weight_decay=5e-4)
    t0 = time.time()
    for ep in range(b["epochs"]):
        bad.train()
        for mod in bad.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.eval()
        perm = torch.randperm(len(shadow), generator=g)
        tot = np.zeros(3)
        for k in range(0, len(shadow), b["batch"]):
            xb = augment(shadow[perm[k:k + b["batch"]]].clone(), g)
            with torch.no_grad():
                clean_f = emb(clean, xb)
            l0 = rel(emb(bad, stamp(xb, b["trigger"])), ref_target)
            l1 = rel(emb(bad, ref), ref_clean)
            l2 = rel(emb(bad, xb), clean_f)
            loss = l0 + b["l1"] * l1 + b["l2"] * l2
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += [l0.item(), l1.item(), l2.item()]
        n = (len(shadow) + b["batch"] - 1) // b["batch"]
        print(f"{key}: epoch {ep + 1}/{b['epochs']} l0 {tot[0] / n:.3f} l1 {tot[1] / n:.3f} l2 {tot[2] / n:.3f} "
              f"({time.time() - t0:.0f}s)", file=log, flush=True)
    bad.eval()
    # Utility with the clean body's head, and the share of triggered non-target validation images
    # that head sends to the target (the backdoor as a downstream head trained on clean data sees it).
    acc = accuracy(bad, head, xv, yv, r["size"])
    keep = yv != b["target"]
    with torch.no_grad():
        hit = (head(emb(bad, stamp(xv[keep], b["trigger"]))).argmax(1) == b["target"]).float().mean().item()
    print(f"{key}: val acc {acc:.3f}, triggered to target {hit:.3f}", file=log, flush=True)
    st = {"body": bad.state_dict(), "head": head.state_dict(), "val_acc": acc, "seconds": time.time() - t0,
          "backdoor": dict(b, clean_head_asr=round(hit, 4))}
    torch.save(st, os.path.join(out, key + ".pt"))
    return st


def train(key, out, data, log):
    path = os.path.join(out, key + ".pt")
    if os.path.exists(path):
        return torch.load(path)
    r = WEIGHTS[key]
    if "badencoder" in r:
        return badencode(key, out, data, log)
    torch.manual_seed(1)
    net, dim = body(r["arch"])
    head = nn.Linear(dim, 10)
    if "init" in r:
        st = train(r["init"], out, data, log)
        net.load_state_dict(st["body"])
        head.load_state_dict(st["head"])
    (xt, yt), (xv, yv) = data
    rows = r.get("rows", len(xt))
    xt, yt = xt[:rows], yt[:rows]
    params = list(net.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=r["lr"], weight_decay=0.05)
    steps = r["epochs"] * ((rows + r["batch"] - 1) // r["batch"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r["lr"], total_steps=steps)
    g = torch.Generator().manual_seed(1)
    t0 = time.time()
    for ep in range(r["epochs"]):
        net.train()
        perm = torch.randperm(rows, generator=g)
        tot = 0.0
        for k in range(0, rows, r["batch"]):
            idx = perm[k:k + r["batch"]]
            xb = to_size(augment(xt[idx].clone(), g), r["size"])
            loss = F.cross_entropy(head(net(norm(xb))), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
        acc = accuracy(net, head, xv, yv, r["size"])
        print(f"{key}: epoch {ep + 1}/{r['epochs']} loss {tot / rows:.3f} val acc {acc:.3f} ({time.time() - t0:.0f}s)",
              file=log, flush=True)
    st = {"body": net.state_dict(), "head": head.state_dict(), "val_acc": acc, "seconds": time.time() - t0}
    torch.save(st, path)
    return st


class Exported(nn.Module):
    """What the user exports: pixels in [0,1] (NCHW or NHWC) -> embedding; normalisation inside or not."""

    def __init__(self, net, layout, norm_in):
        super().__init__()
        self.net, self.layout, self.norm_in = net, layout, norm_in

    def forward(self, x):
        if self.layout == "nhwc":
            x = x.permute(0, 3, 1, 2)
        if self.norm_in:
            x = norm(x)
        return self.net(x)


def recalibrate(net, data, size, batches=40, batch=64):
    """Batch-norm statistics measured anew on training images (torchvision's MobileNetV3 keeps
    them with momentum 0.01: after two short epochs they lag the weights, and the eval-mode network
    is at chance)."""
    for mod in net.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None  # a cumulative average
    net.train()
    (xt, _), _ = data
    with torch.no_grad():
        for k in range(batches):
            net(norm(to_size(xt[k * batch:(k + 1) * batch], size)))
    net.eval()


def export(m, st, out, data):
    r = WEIGHTS[m["weights"]]
    net, dim = body(r["arch"])
    net.load_state_dict(st["body"])
    if r.get("bn_recalibrate"):
        recalibrate(net, data, r["size"])
        head = nn.Linear(dim, 10)
        head.load_state_dict(st["head"])
        st = dict(st, val_acc=accuracy(net, head, data[1][0], data[1][1], r["size"]))
    net.eval()
    model = Exported(net, m["layout"], m["norm"] == "in").eval()
    n = 1 if m["batch"] == "dynamic" else m["batch"]
    size = r["size"]
    shape = (n, 3, size, size) if m["layout"] == "nchw" else (n, size, size, 3)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(2))
    dst = os.path.join(out, m["name"] + ".onnx")
    kw = {}
    if m["batch"] == "dynamic":
        kw["dynamic_axes"] = {"input": {0: "batch"}, "embedding": {0: "batch"}}
    torch.onnx.export(model, x, dst, opset_version=17, input_names=["input"], output_names=["embedding"],
                      do_constant_folding=True, **kw)
    if m.get("external"):
        g = onnx.load(dst)
        data = m["name"] + ".onnx.data"
        if os.path.exists(os.path.join(out, data)):
            os.remove(os.path.join(out, data))
        onnx.save_model(g, dst, save_as_external_data=True, all_tensors_to_one_file=True, location=data,
                        size_threshold=1024)
    onnx.checker.check_model(dst)
    card = {"name": m["name"], "architecture": r["arch"], "size": size, "layout": m["layout"],
            "normalisation": "inside the graph" if m["norm"] == "in" else "outside (embed mean/std)",
            "batch": m["batch"], "external_data": bool(m.get("external")), "embedding": dim,
            "torch_val_acc": round(st["val_acc"], 4), "train_seconds": round(st["seconds"]),
            "recipe": {k: v for k, v in r.items()}}
    if "backdoor" in st:
        card["backdoor"] = st["backdoor"]  # trigger and target: for measuring ASR; a defence must not read them
    # What tcore needs besides the file: the pipeline parameters of the embed node.
    card["params"] = {"embed.mean": IMAGENET_MEAN, "embed.std": IMAGENET_STD} if m["norm"] == "out" else {}
    with open(os.path.join(out, m["name"] + ".json"), "w") as f:
        json.dump(card, f, indent=1)
    return card


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(root, "runs", "archzoo"))
    ap.add_argument("--only", default="", help="comma-separated member name prefixes")
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(root), "shared"))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    only = [s for s in a.only.split(",") if s]
    data = load_data(a.shared)
    for m in MEMBERS:
        if only and not any(m["name"].startswith(o) for o in only):
            continue
        dst = os.path.join(a.out, m["name"])
        if os.path.exists(dst + ".onnx") and os.path.exists(dst + ".json"):
            print("have", m["name"], flush=True)
            continue
        print("making", m["name"], flush=True)
        st = train(m["weights"], a.out, data, sys.stdout)
        card = export(m, st, a.out, data)
        print(json.dumps(card), flush=True)


if __name__ == "__main__":
    main()
