# Evaluates a gunicorn Python config as gunicorn 27 does (gunicorn/app/base.py,
# get_config_from_filename and load_config_from_module_name_or_filename) and writes what c10k
# needs as one JSON object on the standard output it was started with. Run by c10k's
# pyconfig.rs as `python -c THIS LOCATION SETTINGS_JSON HOOKS_JSON`; read that file for the
# protocol. Whatever the config file prints goes to standard error, so it cannot garble the JSON.
import ast
import importlib
import importlib.util
import json
import math
import os
import sys
import traceback

out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)

location, settings, hooks = sys.argv[1], set(json.loads(sys.argv[2])), set(json.loads(sys.argv[3]))
sys.argv = [location]
# gunicorn chdir()s to its --chdir default, the working directory, and puts it first on
# sys.path before it reads the file; `-c` here put '' there instead.
cwd = os.getcwd()
if sys.path and sys.path[0] == "":
    sys.path.pop(0)
if cwd not in sys.path:
    sys.path.insert(0, cwd)
environ_before = dict(os.environ)


def answer(obj):
    out.write(json.dumps(obj))
    out.flush()
    sys.exit(0)


def assigned_lines(path):
    """The line of each module-level name (the last binding wins), outside functions and
    classes, so that c10k can name the line of a bad value."""
    lines = {}
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), path)
    except Exception:
        return lines

    def names(target):
        if isinstance(target, ast.Name):
            yield target.id
        elif isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                yield from names(t)
        elif isinstance(target, ast.Starred):
            yield from names(target.value)

    def visit(stmts):
        for node in stmts:
            found = []
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    found.extend(names(t))
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                found.extend(names(node.target))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                found.append(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                found.extend((a.asname or a.name).split(".")[0] for a in node.names)
            for name in found:
                lines[name] = node.lineno
            for field in ("body", "orelse", "finalbody"):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    visit(getattr(node, field, []) or [])
            for handler in getattr(node, "handlers", []) or []:
                visit(handler.body)

    visit(tree.body)
    return lines


filename = None
if not location.startswith("python:"):
    filename = os.path.abspath(location)
    if not os.path.exists(filename):
        answer({"error": "%r doesn't exist" % location})
try:
    if location.startswith("python:"):
        name = location[len("python:"):]
        spec = importlib.util.find_spec(name)
        filename = spec.origin if spec is not None and spec.has_location else None
        mod = importlib.import_module(name)
    else:
        # gunicorn's module name; a .pyc is loaded as bytecode, as gunicorn's spec does.
        spec = importlib.util.spec_from_file_location("__config__", filename)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["__config__"] = mod
        spec.loader.exec_module(mod)
except BaseException as e:  # SystemExit and KeyboardInterrupt too: the file did not finish.
    line = None
    if isinstance(e, SyntaxError) and e.filename and filename and os.path.abspath(e.filename) == filename:
        line = e.lineno
    else:
        for frame in traceback.extract_tb(e.__traceback__):
            if filename and os.path.abspath(frame.filename) == filename:
                line = frame.lineno
    # Frames of this script and of importlib's machinery are c10k's, not the user's.
    frames = [
        f for f in traceback.extract_tb(e.__traceback__)
        if f.filename != "<string>" and not f.filename.startswith("<frozen importlib")
        and os.sep + "importlib" + os.sep not in f.filename
    ]
    if frames:
        print("Traceback (most recent call last):", file=sys.stderr)
        print("".join(traceback.format_list(frames)), end="", file=sys.stderr)
    last = traceback.format_exception_only(type(e), e)[-1].strip()
    answer({"error": last, "line": line})


def in_dict(value):
    """Whether a value inside a dict is JSON that TOML can hold: no None, no inf or nan."""
    if isinstance(value, (bool, str, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(in_dict(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and in_dict(v) for k, v in value.items())
    return False


def plain(value):
    """The value as JSON c10k can take as a TOML value, or a description of its type. A dict
    goes as a TOML table: c10k takes gunicorn's default (secure_scheme_headers as gunicorn
    ships it, logconfig_dict = {}) as asking for nothing, and names the setting for another."""
    if isinstance(value, (bool, str)):
        return {"value": value}
    if isinstance(value, int):
        return {"value": value}
    if isinstance(value, float):
        if math.isfinite(value):
            return {"value": value}
        return {"type": "float %r" % value}
    if isinstance(value, (list, tuple)):
        for item in value:
            if not isinstance(item, str):
                return {"type": "%s with the item %r" % (type(value).__name__, item)}
        return {"value": list(value)}
    if isinstance(value, dict) and in_dict(value):
        return {"value": value}
    return {"type": type(value).__name__}


lines = assigned_lines(filename) if filename and filename.endswith(".py") else {}
found, hooks_set = [], []
for name, value in vars(mod).items():
    # gunicorn: `if k not in self.cfg.settings: continue` (names are case-sensitive there).
    if name not in settings:
        continue
    entry = {"name": name, "line": lines.get(name)}
    if name in hooks:
        if value is not None:
            hooks_set.append(entry)
        continue
    # None is every optional setting's default in gunicorn (accesslog = None: no access log).
    if value is None:
        continue
    entry.update(plain(value))
    found.append(entry)

environ = {k: v for k, v in os.environ.items() if environ_before.get(k) != v}
removed = sorted(k for k in environ_before if k not in os.environ)
answer({"settings": found, "hooks": hooks_set, "environ": environ, "removed": removed,
        "file": filename})
