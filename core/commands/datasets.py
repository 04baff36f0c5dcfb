"""`intriguing datasets`: MNIST and the registered folders of class folders; `datasets add NAME DIR
[--classes FILE]` registers one, `datasets remove NAME` forgets it (the folder itself is never touched)."""

from __future__ import annotations


def run(args) -> int:
    from core.cli import emit
    from core.commands.models import columns
    from core.data import datasets
    from core.errors import InvalidParameterError

    if args.action == "add":
        if args.name is None or args.dir is None:
            raise InvalidParameterError("`intriguing datasets add` needs NAME DIR.")
        new = datasets.add(args.name, args.dir, args.classes)
        text = f"registered {new.name}: {new.n} images, {len(new.classes)} classes, fingerprint {new.fingerprint}"
        emit(new.to_dict(), args.json, text)
        return 0
    if args.action == "remove":
        if args.name is None:
            raise InvalidParameterError("`intriguing datasets remove` needs NAME.")
        emit(datasets.remove(args.name).to_dict(), args.json, f"removed {args.name}")
        return 0
    found = datasets.entries()
    rows = [
        {
            "name": "mnist",
            "classes": 10,
            "images": 70_000,
            "fingerprint": "mnist",
            "root": "$INTRIGUING_DATA_DIR",
        }
    ]
    rows += [
        {
            "name": e.name,
            "classes": len(e.classes),
            "images": e.n,
            "fingerprint": e.fingerprint,
            "root": e.root,
        }
        for e in found.values()
    ]
    table = [("dataset", "classes", "images", "fingerprint", "folder")]
    table += [(r["name"], str(r["classes"]), str(r["images"]), r["fingerprint"], r["root"]) for r in rows]
    emit(rows, args.json, columns(table, right=(1, 2)))
    return 0


def register(sub, common) -> None:
    p = sub.add_parser(
        "datasets",
        parents=[common],
        help="list datasets; `datasets add NAME DIR` registers a folder of class folders",
    )
    p.add_argument("action", nargs="?", choices=("add", "remove"))
    p.add_argument("name", nargs="?", help="the dataset's name (letters, digits, . _ -)")
    p.add_argument(
        "dir",
        nargs="?",
        help="a folder holding one sub-folder of images per class, or a torchvision root (CIFAR-10/100)",
    )
    p.add_argument("--classes", default=None, metavar="FILE", help="class names in index order, one a line")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
