"""Frozen evaluation: the attentive probe's steps, online readouts, feature cache, labelled data, configs."""
