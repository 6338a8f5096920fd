"""Reading a recipe's YAML: safe loading only (plain data, nothing constructed from tags), and
strict: a key written twice in one mapping is an error (PyYAML would silently keep the last one, so
a second ``head:`` rule would replace the first unseen). Syntax errors name line and column."""

from __future__ import annotations

from compress.errors import ConfigError, InputError


def read_yaml(path: str) -> object:
    """The parsed YAML of ``path``, or one one-line InputError."""
    import yaml

    try:
        text = open(path, encoding="utf-8").read()
    except OSError as exc:
        raise InputError(f"cannot read recipe {path}: {exc.strerror}") from None
    try:
        return yaml.load(text, Loader=_strict_loader())  # a SafeLoader: yaml.safe_load plus the duplicate check
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None


def _strict_loader() -> type:
    import yaml

    class StrictSafeLoader(yaml.SafeLoader):
        """SafeLoader refusing duplicate keys."""

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
        first: dict = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                continue  # unhashable: construct_mapping reports it
            if key in first:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first[key] + 1})", key_node.start_mark)
            first[key] = key_node.start_mark.line
        return loader.construct_mapping(node, deep=True)

    StrictSafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return StrictSafeLoader
