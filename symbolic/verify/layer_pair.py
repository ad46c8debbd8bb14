"""A layer object as a forward/backward pair (``bptt grade --layer CLASS``): plain Python, no imports.

``bptt grade``'s sandbox driver runs this file's text beside the graded file (``sandbox.LAYER``), and
``grade_pair`` imports it, so both read a layer the same way.
"""


def layer_pair(cls, forward, backward, grads_from, names):
    """(forward(x, h0, *weights) -> (h, layer), backward(dh, layer) -> (dx, dh0, *weight gradients)) for a
    class built from the weights, whose backward returns (dx, dh0) or dx (dh0 then in layer.dh0 or
    layer.dh) and whose gradients are read as ``grads_from`` says (or returned after dx, dh0)."""
    def run_forward(x, h0, *weights):
        layer = cls(*weights)
        h = getattr(layer, forward)(x, h0)
        return (h[0] if isinstance(h, (tuple, list)) else h), layer

    def run_backward(dh, layer):
        back = getattr(layer, backward)(dh)
        if not isinstance(back, (tuple, list)):
            kept = [a for a in ("dh0", "dh") if hasattr(layer, a)]
            if not kept:
                raise AttributeError(f"{backward} returns dx alone and the layer keeps no dh0 (nor dh): return "
                                     "(dx, dh0), or keep dh0 in layer.dh0")
            back = (back, getattr(layer, kept[0]))
        if not grads_from:
            return tuple(back)
        return (back[0], back[1], *read_gradients(layer, grads_from, names))

    return run_forward, run_backward


def read_gradients(layer, spec, names):
    """spec "grads": a list in the weights' order, or a dict keyed by their names (or "d" + name);
    a spec with {}: one attribute per weight ("d{}": layer.dWx, layer.dWh, layer.db)."""
    attributes = [spec.replace("{}", name) for name in names] if "{}" in spec else [spec]
    missing = [a for a in attributes if not hasattr(layer, a)]
    if missing:
        raise AttributeError(f"the layer has no attribute {missing[0]} after backward: give --grads-from the "
                             "attribute that holds the gradients")
    if "{}" in spec:
        return [getattr(layer, a) for a in attributes]
    value = getattr(layer, spec)
    if hasattr(value, "keys"):
        absent = [name for name in names if name not in value and "d" + name not in value]
        if absent:
            raise KeyError(f"layer.{spec} has no {absent[0]} (nor d{absent[0]}): key it by --params' names")
        return [value[name] if name in value else value["d" + name] for name in names]
    return list(value)
