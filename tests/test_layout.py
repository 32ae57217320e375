"""The package's shape: imports point one way, entry points live in cli/, process set-up in one place."""
import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "pix2pixhd_jax"
MAX_LINES = 650


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imported_modules(path: pathlib.Path, name: str, known: set[str]) -> set[str]:
    """Package modules `path` imports anywhere in its body (function-level imports included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            candidates = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for c in candidates:
            while c and c not in known:
                c = c.rpartition(".")[0]
            if c and c != name:
                found.add(c)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imported_modules(path, name, set(modules)) for name, path in modules.items()}


def test_no_import_cycles_among_package_modules():
    graph = _graph()
    # Package __init__ files only re-export their children; an edge child -> parent __init__ is how
    # Python resolves `from pkg.child import x`, not a design dependency.
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_library_modules_do_not_import_entry_points_or_configs():
    graph = _graph()
    for module, deps in graph.items():
        if module.startswith(("pix2pixhd_jax.cli", "pix2pixhd_jax.configs")) or module == "pix2pixhd_jax.main":
            continue
        assert not {d for d in deps if d.startswith("pix2pixhd_jax.cli")}, f"{module} imports the CLI layer"
        assert "pix2pixhd_jax.configs" not in deps, f"{module} imports the configs (the commands pass them in)"
        source = _modules()[module].read_text()
        assert "from configs" not in source and "import configs" not in source, f"{module} imports configs/"


def test_entry_points_live_in_cli_and_use_absl_only():
    for name, path in _modules().items():
        text = path.read_text()
        in_cli = name.startswith("pix2pixhd_jax.cli") or name == "pix2pixhd_jax.main"
        assert "argparse" not in text, f"{name} uses argparse; entry points use absl flags"
        if not in_cli:
            assert 'if __name__ == "__main__"' not in text, f"{name} is a library module with a main"
            assert "def main(" not in text, f"{name} is a library module with a main()"


def test_process_setup_in_one_file_and_no_sys_path_edits():
    flag_files = [n for n, p in _modules().items() if "XLA_FLAGS" in p.read_text()]
    assert flag_files == ["pix2pixhd_jax.cli.process"], flag_files
    for name, path in _modules().items():
        text = path.read_text()
        assert "sys.path" not in text, f"{name} edits sys.path"
        assert "PLATFORM_NOTES" not in text, f"{name} cites a file outside the repository"


def test_modules_stay_small():
    long = {n: len(p.read_text().splitlines()) for n, p in _modules().items()}
    assert not {n: k for n, k in long.items() if k > MAX_LINES}, long


def test_editing_package_reads_bottom_up():
    # ops, scene and compositing are pure numpy on maps (no JAX, no model): the editing session and
    # the vocabulary sit on them, the server on those, and only the editor command uses the server.
    graph, modules = _graph(), _modules()
    pure = {f"pix2pixhd_jax.editing.{m}" for m in ("ops", "scene", "compositing")}
    for name in pure:
        deps = graph[name] - {"pix2pixhd_jax.editing"}
        assert deps <= pure | {"pix2pixhd_jax.data", "pix2pixhd_jax.data.cityscapes"}, (name, deps)
        assert "jax" not in {line.split()[1].split(".")[0] for line in modules[name].read_text().splitlines()
                             if line.startswith(("import ", "from "))}, f"{name} imports JAX"
    for name, deps in graph.items():
        server_deps = {d for d in deps if d.startswith("pix2pixhd_jax.editing.server")}
        if server_deps and not name.startswith("pix2pixhd_jax.editing.server"):
            assert name == "pix2pixhd_jax.cli.editor", f"{name} imports the editor server {server_deps}"


# The layers README's Layout section promises, bottom first. A module may import its own layer and
# the ones below; a new module must be placed here (the test names it otherwise).
LAYERS = [
    ("storage and signals", ["storage", "semantics", "lattice_geometry", "host_memory", "stopping", "choices",
                             "configs"]),
    ("data and run records", ["data", "visualize", "run_config", "run_folder", "workdir_lease", "metric_writer"]),
    ("networks and losses", ["models", "losses", "augment"]),
    ("inputs, checkpoints, state", ["inputs", "checkpointing", "state", "optim", "sharding", "features", "compat"]),
    ("step, evaluation, export", ["train_step", "evaluation", "export"]),
    ("training and inference", ["train", "staging", "inference"]),
    ("editing", ["editing"]),
    ("editor server", ["editing.server"]),
    ("commands", ["cli", "main"]),
]


def _layer_of(module: str) -> int:
    """Index in LAYERS of the longest prefix naming `module` (pix2pixhd_jax.x.y -> 'x.y', 'x')."""
    name = module.removeprefix("pix2pixhd_jax.")
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    assert best is not None, f"{module} is in no layer: add it to LAYERS (and README's Layout)"
    return best


def test_imports_follow_the_layer_order():
    graph = _graph()
    wrong = []
    for module, deps in graph.items():
        if module == "pix2pixhd_jax":
            continue
        for dep in deps:
            if dep == "pix2pixhd_jax" or module.startswith(dep + "."):
                continue
            if _layer_of(dep) > _layer_of(module):
                wrong.append(f"{module} ({LAYERS[_layer_of(module)][0]}) imports {dep} "
                             f"({LAYERS[_layer_of(dep)][0]})")
    assert not wrong, "imports pointing up the layers:\n" + "\n".join(sorted(wrong))


def test_configs_install_under_the_package_name():
    # A top-level `configs` package would collide with any other installed package of that name.
    import configparser

    root = PACKAGE.parent
    setup = configparser.ConfigParser()
    setup.read(root / "setup.cfg")
    assert setup["options"]["package_dir"].split() == ["pix2pixhd_jax.configs", "=", "configs"]
    assert setup["options.packages.find"]["include"].split() == ["pix2pixhd_jax*"]
    from pix2pixhd_jax.configs import default, tiny_test

    assert pathlib.Path(default.__file__).parent == root / "configs"
    assert tiny_test.get_config().model.ngf >= 1
