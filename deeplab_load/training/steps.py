"""Distributed training steps of both stages, as tf.functions built under a tf.distribute strategy.

Usage (the model, discriminator and optimizers must be created inside `strategy.scope()`):

    strategy = make_strategy()
    with strategy.scope():
        model = build_deeplab(config)
        discriminator = build_discriminator(num_classes)
        stage1 = Stage1Trainer(model, stage1_optimizer(), strategy, num_classes)
    for pixels, labels in stage1.distribute(train_dataset):     # GLOBAL batches
        loss = stage1.step(pixels, labels)

Batches are global: each replica receives global / replicas examples, and every loss is divided
by a count summed over all replicas (valid pixels, or examples), so the summed replica gradients
equal the single-device gradient of the global batch. Each step returns the global-batch loss.
Functions are `traced.compiled` (traced once per input-shape family); `trace_count` counts traces.
"""
import keras
import tensorflow as tf

from deeplab_load import losses
from deeplab_load.data.batches import Batches
from deeplab_load.models.ops import IGNORE_LABEL, resize_bilinear_align_corners
from deeplab_load.models import discriminator as disc
from deeplab_load.traced import compiled
from deeplab_load.training.strategy import distribute_dataset
from deeplab_load.training.weight_decay import decayed_kernels, weight_decay_loss


def stage1_optimizer(learning_rate=1e-4, momentum=0.9):
    """Stage 1 (pixel-wise CE): momentum SGD, constant lr, as in the paper / original DeepLab."""
    return keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum)


def generator_optimizer(learning_rate=5e-6, momentum=0.95):
    """Stage 2 generator (adversarial): momentum SGD, lr 5e-6, momentum 0.95 (paper)."""
    return keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum)


DISCRIMINATOR_OPTIMIZERS = ("adagrad", "adam")


def discriminator_optimizer(learning_rate=0.01, name="adagrad"):
    """Discriminator: Adagrad, lr 0.01 (paper); "adam" for small data sets where a MobileNet
    trained from scratch must separate the sides within a few epochs (the demo)."""
    if name == "adagrad":
        return keras.optimizers.Adagrad(learning_rate=learning_rate)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    raise ValueError(f"discriminator optimizer must be one of {DISCRIMINATOR_OPTIMIZERS}, "
                     f"got {name!r}")


def _global_sum(value):
    """Sum of a per-replica scalar over all replicas (call in replica context); no gradient."""
    context = tf.distribute.get_replica_context()
    return tf.stop_gradient(context.all_reduce(tf.distribute.ReduceOp.SUM, value))


def _regularization_loss(model, strategy):
    """The model's weight-decay terms, split across replicas so their sum is counted once."""
    if not model.losses:
        return 0.0
    return tf.add_n([tf.cast(l, tf.float32) for l in model.losses]) / strategy.num_replicas_in_sync


def _weight_decay_term(kernels, weight_decay, strategy):
    """The original's L2 weight decay on `kernels`, split across replicas (counted once)."""
    if not weight_decay:
        return 0.0
    return weight_decay_loss(kernels, weight_decay) / strategy.num_replicas_in_sync


def _kernels_to_decay(model, kernels):
    """`kernels` (a segmentor's weight-decay table), else DeepLab's (`decayed_kernels`)."""
    return decayed_kernels(model) if kernels is None else list(kernels)


def _local_replicas(strategy):
    """Replicas on this worker (the default strategy has one)."""
    try:
        return len(strategy.extended.worker_devices)
    except RuntimeError:      # the default strategy does not list its devices
        return 1


def _check_created_in_scope(strategy, model, what):
    for variable in model.variables:
        backing = getattr(variable, "value", variable)   # Keras 3 wraps the tf.Variable
        if not strategy.extended.variable_created_in_scope(backing):
            raise ValueError(f"{what} variable {variable.path} was created outside "
                             f"strategy.scope(): build the model inside `with strategy.scope():`")


def _build_optimizer(strategy, optimizer, variables):
    # MirroredStrategy needs the slots to exist before the first step (see TF_NOTES.md).
    with strategy.scope():
        if not optimizer.built:
            optimizer.build(variables)


class _Trainer:
    """Shared plumbing: the strategy, dataset distribution, the trace counter."""

    def __init__(self, strategy):
        self.strategy = strategy
        self.trace_count = 0

    def distribute(self, dataset):
        """Global-batch tf.data.Dataset -> distributed dataset whose elements feed `step`."""
        return distribute_dataset(self.strategy, dataset)

    def _check_distributed(self, value):
        # A plain tensor would reach every local replica whole: the batch would count twice.
        if (_local_replicas(self.strategy) > 1
                and not isinstance(value, tf.distribute.DistributedValues)):
            raise ValueError("with several replicas, step() takes the elements of "
                             "trainer.distribute(dataset), not plain tensors")

    def _sum(self, per_replica):
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def _apply(self, optimizer, tape, loss, variables):
        gradients = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(gradients, variables))


class Stage1Trainer(_Trainer):
    """Pixel-wise CE on (pixels [B,H,W,3] in 0..255, labels int32 [B,H,W], 255 = ignore).

    Logits are upsampled to the label size (bilinear, align_corners) as in DeepLab, and the loss
    is the mean over the global batch's valid pixels. With `class_stats`
    (`class_weights.ClassPixelStats`) and `use_class_weights=True` it is the paper's weighted CE
    (`losses.class_balanced_pixel_weights`, clipped to [min_class_weight, max_class_weight]);
    switch with `set_use_class_weights` (one extra trace).
    `weight_decay`: the original's L2 term on the conv kernels (`training.weight_decay`; 0 = off)
    added to the loss (and to the returned value); `kernels_to_decay`: the kernels it applies to
    (default: DeepLab's table, `weight_decay.decayed_kernels`).
    `model_training` is the model's `training` argument: True (DeepLab's training mode) enables
    the concat-projection dropout; BatchNorm follows the model's fine_tune_batch_norm either way.
    """

    def __init__(self, model, optimizer, strategy, num_classes, class_stats=None,
                 use_class_weights=False, min_class_weight=0.1, max_class_weight=10.0,
                 ignore_label=IGNORE_LABEL, model_training=True, weight_decay=0.0,
                 kernels_to_decay=None):
        super().__init__(strategy)
        self.model_training = model_training
        _check_created_in_scope(strategy, model, "segmentation model")
        self.model, self.optimizer = model, optimizer
        self.num_classes, self.ignore_label = num_classes, ignore_label
        self.weight_decay = float(weight_decay)
        self._decayed_kernels = _kernels_to_decay(model, kernels_to_decay)
        weight_decay_loss(self._decayed_kernels, self.weight_decay)    # validates the value
        self.class_stats = class_stats
        self.min_class_weight, self.max_class_weight = min_class_weight, max_class_weight
        self.set_use_class_weights(use_class_weights)
        _build_optimizer(strategy, optimizer, model.trainable_variables)
        self._functions = {}

    def set_use_class_weights(self, use_class_weights):
        if use_class_weights and self.class_stats is None:
            raise ValueError("weighted cross entropy needs class_stats (training-set statistics)")
        self.use_class_weights = bool(use_class_weights)

    def _replica_step(self, pixels, labels, weighted):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.model(pixels, training=self.model_training)
            logits = resize_bilinear_align_corners(tf.cast(logits, tf.float32), tf.shape(labels)[1:3])
            pixel_weights = None
            if weighted:
                pixel_weights = losses.class_balanced_pixel_weights(
                    labels, self.num_classes, self.class_stats.mean_class_fraction,
                    self.min_class_weight, self.max_class_weight, self.ignore_label)
            total, count = losses.cross_entropy_sum_and_count(labels, logits, pixel_weights,
                                                              self.ignore_label)
            loss = total / tf.maximum(_global_sum(count), 1.0)
            loss += _regularization_loss(self.model, self.strategy)
            loss += _weight_decay_term(self._decayed_kernels, self.weight_decay, self.strategy)
            scaled = self.optimizer.scale_loss(loss)
        self._apply(self.optimizer, tape, scaled, variables)
        return loss

    def _function(self, weighted):
        if weighted not in self._functions:
            @compiled
            def step(pixels, labels):
                self.trace_count += 1
                per_replica = self.strategy.run(self._replica_step, (pixels, labels, weighted))
                return self._sum(per_replica)
            self._functions[weighted] = step
        return self._functions[weighted]

    def step(self, pixels, labels):
        """One update on a distributed global batch; returns the global mean CE (float32)."""
        self._check_distributed(pixels)
        return self._function(self.use_class_weights)(pixels, labels)


# --adv_generator_mode -> the generator's `training` argument in adversarial steps.
GENERATOR_MODES = {"frozen": False, "train": True}


class GeneratorTrainer(_Trainer):
    """Adversarial generator step: loss -log D(G(x)), CE off, D frozen (inference mode, no update).

    `labels` are the ground truth of the batch; only their ignore pixels are used (zeroed in D's
    input). `map_encoding`: "straight_through" (default) or "soft". `model_training`,
    `weight_decay`, `kernels_to_decay`: as in `Stage1Trainer` (`model_training` is the
    generator's `training` argument: False runs it as inference does -- BatchNorm on its moving statistics, left
    unchanged, and no dropout -- the runs' default, `--adv_generator_mode=frozen`; D always runs
    in inference mode).

    `hybrid_weights=(ce_weight, adversarial_weight)` makes the step the hybrid loss of Luc et al.
    2016, ce_weight * CE + adversarial_weight * -log D(G(x)), both terms from one forward pass on
    the same batch and one optimizer step (the CE is `Stage1Trainer`'s unweighted pixel mean;
    (1, lambda) is their CE + lambda adv). None (default) is the pure adversarial step.
    """

    def __init__(self, model, discriminator, optimizer, strategy, num_classes,
                 map_encoding="straight_through", ignore_label=IGNORE_LABEL, model_training=True,
                 weight_decay=0.0, hybrid_weights=None, kernels_to_decay=None):
        super().__init__(strategy)
        if hybrid_weights is not None:
            hybrid_weights = tuple(float(w) for w in hybrid_weights)
            if len(hybrid_weights) != 2 or min(hybrid_weights) < 0:
                raise ValueError(f"hybrid_weights must be (ce_weight >= 0, adversarial_weight "
                                 f">= 0), got {hybrid_weights!r}")
        self.hybrid_weights = hybrid_weights
        self.model_training = model_training
        if map_encoding not in disc.MAP_ENCODINGS:
            raise ValueError(f"map_encoding must be one of {disc.MAP_ENCODINGS}, got {map_encoding!r}")
        _check_created_in_scope(strategy, model, "segmentation model")
        _check_created_in_scope(strategy, discriminator, "discriminator")
        self.model, self.discriminator, self.optimizer = model, discriminator, optimizer
        self.num_classes, self.ignore_label = num_classes, ignore_label
        self.map_encoding = map_encoding
        self.weight_decay = float(weight_decay)
        self._decayed_kernels = _kernels_to_decay(model, kernels_to_decay)
        weight_decay_loss(self._decayed_kernels, self.weight_decay)    # validates the value
        self.input_size = disc.discriminator_input_size(discriminator)
        _build_optimizer(strategy, optimizer, model.trainable_variables)
        self._step = compiled(self._distributed_step)

    def discriminator_inputs(self, pixels, labels, training=None):
        """D's input [B,s,s,3K] of the generator's maps of a crop batch (differentiable).

        The same `discriminator_inputs` as D's training data: the crop resized to D's size,
        ground-truth ignore pixels (padding included) zeroed in every class.
        """
        training = self.model_training if training is None else training
        logits = self.model(pixels, training=training)
        maps = disc.generator_class_maps(logits, tf.shape(pixels)[1:3], self.map_encoding)
        ignore_mask = tf.equal(tf.cast(labels, tf.int32), self.ignore_label)
        return disc.discriminator_inputs(pixels, maps, ignore_mask, self.input_size)

    def _replica_step(self, pixels, labels):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            d_inputs = self.discriminator_inputs(pixels, labels)
            d_logits = self.discriminator(d_inputs, training=False)
            per_example = losses.generator_adversarial_per_example(d_logits)
            batch = tf.cast(tf.shape(per_example)[0], tf.float32)
            loss = tf.reduce_sum(per_example) / tf.maximum(_global_sum(batch), 1.0)
            loss += _weight_decay_term(self._decayed_kernels, self.weight_decay, self.strategy)
            scaled = self.optimizer.scale_loss(loss)
        self._apply(self.optimizer, tape, scaled, variables)
        return loss

    def _replica_hybrid_step(self, pixels, labels):
        ce_weight, adversarial_weight = self.hybrid_weights
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.model(pixels, training=self.model_training)
            maps = disc.generator_class_maps(logits, tf.shape(pixels)[1:3], self.map_encoding)
            ignore_mask = tf.equal(tf.cast(labels, tf.int32), self.ignore_label)
            d_inputs = disc.discriminator_inputs(pixels, maps, ignore_mask, self.input_size)
            per_example = losses.generator_adversarial_per_example(
                self.discriminator(d_inputs, training=False))
            batch = tf.cast(tf.shape(per_example)[0], tf.float32)
            adversarial = tf.reduce_sum(per_example) / tf.maximum(_global_sum(batch), 1.0)
            upsampled = resize_bilinear_align_corners(tf.cast(logits, tf.float32),
                                                      tf.shape(labels)[1:3])
            total, count = losses.cross_entropy_sum_and_count(labels, upsampled, None,
                                                              self.ignore_label)
            cross_entropy = total / tf.maximum(_global_sum(count), 1.0)
            loss = ce_weight * cross_entropy + adversarial_weight * adversarial
            loss += _weight_decay_term(self._decayed_kernels, self.weight_decay, self.strategy)
            scaled = self.optimizer.scale_loss(loss)
        self._apply(self.optimizer, tape, scaled, variables)
        return loss

    def _distributed_step(self, pixels, labels):
        self.trace_count += 1
        replica_step = (self._replica_step if self.hybrid_weights is None
                        else self._replica_hybrid_step)
        return self._sum(self.strategy.run(replica_step, (pixels, labels)))

    def step(self, pixels, labels):
        """One generator update on a distributed global batch; returns mean -log D(G(x)) (the
        hybrid loss with `hybrid_weights`) + the weight-decay term when weight_decay > 0."""
        self._check_distributed(pixels)
        return self._step(pixels, labels)


class DiscriminatorTrainer(_Trainer):
    """Weighted binary CE on class-split images; real = ground truth (target 1).

    Batch elements: (pixels float32 [B,H,W,3] 0..255, label_map int32 [B,H,W] (ground truth with
    255, or a generated argmax map), ignore_mask bool [B,H,W] (ground-truth ignore pixels),
    is_real float32 [B], weight float32 [B]) -- what `discriminator_dataset` produces. The loss is
    sum(weight * BCE) / global batch size.
    """

    def __init__(self, discriminator, optimizer, strategy, num_classes):
        super().__init__(strategy)
        _check_created_in_scope(strategy, discriminator, "discriminator")
        self.discriminator, self.optimizer = discriminator, optimizer
        self.num_classes = num_classes
        self.input_size = disc.discriminator_input_size(discriminator)
        _build_optimizer(strategy, optimizer, discriminator.trainable_variables)
        self._step = compiled(self._distributed_step)
        self._evaluate = compiled(self._distributed_evaluate)
        self._probe = None

    def inputs(self, pixels, label_map, ignore_mask):
        """D's input [B,s,s,3K] of label maps int [B,H,W] (one-hot, ignore zeroed)."""
        maps = disc.one_hot_maps(label_map, self.num_classes)
        return disc.discriminator_inputs(pixels, maps, ignore_mask, self.input_size)

    def _replica_moments(self, pixels, label_map, ignore_mask):
        features = self._probe(self.inputs(pixels, label_map, ignore_mask), training=True)
        count = tf.cast(tf.shape(pixels)[0], tf.float32)
        sums = []
        for feature in features:
            mean, variance = tf.nn.moments(tf.cast(feature, tf.float32), axes=[0, 1, 2])
            sums.append(tf.stack([mean * count, variance * count]))
        return count, sums

    def _distributed_moments(self, pixels, label_map, ignore_mask):
        count, sums = self.strategy.run(self._replica_moments, (pixels, label_map, ignore_mask))
        return self._sum(count), [self._sum(s) for s in sums]

    def recompute_batch_norm_statistics(self, dataset, max_batches=None):
        """Sets D's BatchNorm moving mean/variance to the example-weighted average, over the
        batches of `dataset` (`discriminator_dataset` elements, at most `max_batches`), of the
        batch moments D normalises with in its training steps ("precise BatchNorm").

        Keras' moving averages (momentum 0.99) stay near their initial 0 / 1 over the few
        dozen steps of a LoAd round, so D in inference mode -- hold-out accuracy, the
        generator's steps -- would call every input real or every one fake. Returns the number
        of examples used.
        """
        if self._probe is None:
            self._bn_layers, self._probe = disc.batch_norm_probe(self.discriminator)
            self._moments = compiled(self._distributed_moments)
        total, sums = 0.0, None
        for index, (pixels, label_map, ignore_mask, _, _) in enumerate(
                Batches(self.distribute(dataset))):
            if max_batches is not None and index >= max_batches:
                break
            count, batch_sums = self._moments(pixels, label_map, ignore_mask)
            total += float(count)
            batch_sums = [s.numpy() for s in batch_sums]
            sums = batch_sums if sums is None else [a + b for a, b in zip(sums, batch_sums)]
        if not total:
            raise ValueError("recompute_batch_norm_statistics: the dataset gave no examples")
        with self.strategy.scope():
            for layer, (mean_sum, variance_sum) in zip(self._bn_layers, sums):
                layer.moving_mean.assign(mean_sum / total)
                layer.moving_variance.assign(variance_sum / total)
        return int(total)

    def _replica_step(self, pixels, label_map, ignore_mask, is_real, weight):
        variables = self.discriminator.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.discriminator(self.inputs(pixels, label_map, ignore_mask), training=True)
            per_example = losses.discriminator_bce_per_example(logits, is_real)
            batch = _global_sum(tf.cast(tf.shape(per_example)[0], tf.float32))
            loss = tf.reduce_sum(per_example * tf.cast(weight, tf.float32)) / tf.maximum(batch, 1.0)
            loss += _regularization_loss(self.discriminator, self.strategy)
            scaled = self.optimizer.scale_loss(loss)
        self._apply(self.optimizer, tape, scaled, variables)
        correct = tf.cast(tf.equal(tf.reshape(logits, [-1]) > 0.0, tf.cast(is_real, tf.float32) > 0.5),
                          tf.float32)
        return loss, tf.reduce_sum(correct) / tf.maximum(batch, 1.0)

    def _distributed_step(self, pixels, label_map, ignore_mask, is_real, weight):
        self.trace_count += 1
        loss, accuracy = self.strategy.run(self._replica_step,
                                           (pixels, label_map, ignore_mask, is_real, weight))
        return self._sum(loss), self._sum(accuracy)

    def step(self, pixels, label_map, ignore_mask, is_real, weight):
        """One D update on a distributed global batch; returns (weighted BCE, accuracy)."""
        self._check_distributed(pixels)
        return self._step(pixels, label_map, ignore_mask, is_real, weight)

    def _replica_evaluate(self, pixels, label_map, ignore_mask, is_real):
        logits = self.discriminator(self.inputs(pixels, label_map, ignore_mask), training=False)
        real = tf.cast(is_real, tf.float32) > 0.5
        correct = tf.cast(tf.equal(tf.reshape(logits, [-1]) > 0.0, real), tf.float32)
        real = tf.cast(real, tf.float32)
        return tf.stack([tf.reduce_sum(correct * real), tf.reduce_sum(real),
                         tf.reduce_sum(correct * (1.0 - real)), tf.reduce_sum(1.0 - real)])

    def _distributed_evaluate(self, pixels, label_map, ignore_mask, is_real):
        return self._sum(self.strategy.run(self._replica_evaluate,
                                           (pixels, label_map, ignore_mask, is_real)))

    def evaluate_accuracy(self, dataset):
        """D's accuracy on a global-batch dataset of `discriminator_dataset` elements.

        Returns {"accuracy": mean of the real and fake accuracies, "real_accuracy",
        "fake_accuracy", "examples", "fake_examples"}; a side without examples counts as
        accuracy 0.
        """
        totals = tf.zeros([4])
        for pixels, label_map, ignore_mask, is_real, _ in Batches(self.distribute(dataset)):
            totals += self._evaluate(pixels, label_map, ignore_mask, is_real)
        real_correct, real, fake_correct, fake = (float(v) for v in totals.numpy())
        real_accuracy = real_correct / real if real else 0.0
        fake_accuracy = fake_correct / fake if fake else 0.0
        return {"accuracy": 0.5 * (real_accuracy + fake_accuracy), "real_accuracy": real_accuracy,
                "fake_accuracy": fake_accuracy, "examples": int(real + fake),
                "fake_examples": int(fake)}


def _as_dataset(source):
    """A tf.data.Dataset, or a zero-argument callable returning one (called once per use)."""
    dataset = source() if callable(source) else source
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(f"expected a tf.data.Dataset or a callable returning one, got {type(dataset)}")
    return dataset


def _real_examples(real, weight, ignore_label):
    def to_example(pixels, labels):
        labels = tf.cast(labels, tf.int32)
        return (tf.cast(pixels, tf.float32), labels, tf.equal(labels, ignore_label),
                tf.constant(1.0), tf.constant(weight, tf.float32))
    return _as_dataset(real).map(to_example, num_parallel_calls=tf.data.AUTOTUNE)


def _fake_examples(fake, weight):
    def to_example(pixels, label_map, ignore_mask):
        return (tf.cast(pixels, tf.float32), tf.cast(label_map, tf.int32),
                tf.cast(ignore_mask, tf.bool), tf.constant(0.0), tf.constant(weight, tf.float32))
    return _as_dataset(fake).map(to_example, num_parallel_calls=tf.data.AUTOTUNE)


def discriminator_dataset(real, fakes, batch_size=16, seed=0, shuffle=True,
                          ignore_label=IGNORE_LABEL, balance=True, drop_remainder=False):
    """Batched D data: ground truth (real) + every buffer set (fake), randomly interleaved.

    real: unbatched (pixels [H,W,3], labels [H,W] with 255) -- D_t.
    fakes: list of unbatched (pixels, label_map [H,W], ignore_mask [H,W] bool) -- one per buffer
        set, ignore_mask being the ground truth's ignore pixels of the same image.
    Examples are weighted by `losses.balanced_example_weights` (real and fake sides weigh the
    same whatever len(fakes) is) when `balance`, else 1. All examples need one spatial size.
    Elements: (pixels, label_map, ignore_mask, is_real, weight), batched by `batch_size` (global);
    `drop_remainder` avoids a last batch too small to give every replica an example (D trains
    with batch-statistics BatchNorm).
    """
    if not fakes:
        raise ValueError("discriminator data needs at least one fake (generated) map set")
    sets = len(fakes)
    real_weight = (1.0 + sets) / 2.0 if balance else 1.0
    fake_weight = (1.0 + sets) / (2.0 * sets) if balance else 1.0
    sources = [_real_examples(real, real_weight, ignore_label)]
    sources += [_fake_examples(fake, fake_weight) for fake in fakes]
    if shuffle:
        mixed = tf.data.Dataset.sample_from_datasets(sources, seed=seed,
                                                     stop_on_empty_dataset=False)
    else:
        mixed = sources[0]
        for source in sources[1:]:
            mixed = mixed.concatenate(source)
    return mixed.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def fit_discriminator(trainer, real, fakes, holdout_real, holdout_fake, batch_size=16,
                      max_epochs=20, patience=3, target_accuracy=None, min_delta=0.0, seed=0,
                      restore_best=True, log=None, recompute_batch_norm=True,
                      batch_norm_batches=100, min_epochs=0, extra_holdout_fakes=None):
    """Trains D for one LoAd cycle until its hold-out accuracy stops improving.

    real, fakes: as in `discriminator_dataset` (training images; sources may be callables that
        return a fresh dataset, e.g. re-reading a buffer set's PNGs each epoch).
    holdout_real: (pixels, labels) of the hold-out images (real); holdout_fake: (pixels,
        label_map, ignore_mask) of the current generator's maps on the same images (fake).
    extra_holdout_fakes: {name: dataset like holdout_fake}, further hold-out fakes (e.g. the
        maps of the generator that wrote the newest buffer set). The hold-out fake accuracy is
        then pooled over every fake example, and each part's is reported as
        "fake_accuracy_<name>" besides "fake_accuracy_g_s" (holdout_fake's).
    Stops after `max_epochs`, when the hold-out accuracy (mean of real and fake accuracies) has not
    improved by more than `min_delta` for `patience` epochs, or when it reaches
    `target_accuracy`; patience applies only from epoch `min_epochs` on (a D trained from
    scratch can sit near chance for its first epochs). With `restore_best`, D ends with the
    weights of its best epoch.
    With `recompute_batch_norm` (default), D's BatchNorm moving statistics are recomputed after
    every epoch over at most `batch_norm_batches` batches of its training data (see
    `DiscriminatorTrainer.recompute_batch_norm_statistics`) before the hold-out evaluation, so
    D's inference mode -- the hold-out accuracy and the generator's steps -- judges inputs as
    its training steps do.
    `log(epoch, metrics_dict)` is called after every epoch when given.
    Returns {"epochs", "accuracy", "real_accuracy", "fake_accuracy" (hold-out, of the weights D
    ends with), "best_epoch", "loss" (last epoch's mean), "train_accuracy", "stopped" ("target"
    | "patience" | "max_epochs"), "history" (per epoch: hold-out accuracies, loss, ...)}.
    """
    if max_epochs < 1:
        raise ValueError(f"max_epochs must be >= 1, got {max_epochs}")
    holdout = discriminator_dataset(holdout_real, [holdout_fake], batch_size, shuffle=False,
                                    balance=False)
    extra_holdout = {name: _fake_examples(fake, 1.0).batch(batch_size)
                     for name, fake in (extra_holdout_fakes or {}).items()}
    best_accuracy, best_epoch, best_weights, best_metrics = -1.0, 0, None, None
    history = []
    epochs_without_gain, stopped = 0, "max_epochs"
    loss = train_accuracy = float("nan")
    for epoch in range(1, max_epochs + 1):
        data = discriminator_dataset(real, fakes, batch_size, seed=seed + epoch,
                                     drop_remainder=trainer.strategy.num_replicas_in_sync > 1)
        loss_sum, accuracy_sum, batches = 0.0, 0.0, 0
        with Batches(trainer.distribute(data)) as stream:
            for batch in stream:
                batch_loss, batch_accuracy = trainer.step(*batch)
                loss_sum += float(batch_loss)
                accuracy_sum += float(batch_accuracy)
                batches += 1
        loss, train_accuracy = loss_sum / max(batches, 1), accuracy_sum / max(batches, 1)
        if recompute_batch_norm:
            trainer.recompute_batch_norm_statistics(
                discriminator_dataset(real, fakes, batch_size, seed=seed - epoch,
                                      drop_remainder=trainer.strategy.num_replicas_in_sync > 1),
                max_batches=batch_norm_batches)
        metrics = _holdout_accuracy(trainer, holdout, extra_holdout)
        if log is not None:
            log(epoch, dict(metrics, loss=loss, train_accuracy=train_accuracy))
        history.append(dict(metrics, epoch=epoch, loss=loss, train_accuracy=train_accuracy))
        if best_epoch == 0 or metrics["accuracy"] > best_accuracy + min_delta:
            best_accuracy, best_epoch, best_metrics = metrics["accuracy"], epoch, metrics
            best_weights = trainer.discriminator.get_weights() if restore_best else None
            epochs_without_gain = 0
        else:
            epochs_without_gain += 1
        if target_accuracy is not None and metrics["accuracy"] >= target_accuracy:
            stopped = "target"
            break
        if epochs_without_gain >= patience and epoch >= min_epochs:
            stopped = "patience"
            break
    final = metrics
    if restore_best and best_epoch != epoch:
        with trainer.strategy.scope():
            trainer.discriminator.set_weights(best_weights)
        final = best_metrics
    parts = {k: v for k, v in final.items() if k.startswith("fake_accuracy_")}
    return dict({"epochs": epoch, "accuracy": final["accuracy"],
                 "real_accuracy": final["real_accuracy"], "fake_accuracy": final["fake_accuracy"],
                 "best_epoch": best_epoch, "loss": loss, "train_accuracy": train_accuracy,
                 "stopped": stopped, "history": history}, **parts)


def _holdout_accuracy(trainer, holdout, extra_holdout):
    """`evaluate_accuracy` of the hold-out (real + g_s's fakes), the fake side pooled with the
    fake-only datasets of `extra_holdout` ({name: dataset}); per-part fake accuracies added."""
    metrics = trainer.evaluate_accuracy(holdout)
    if not extra_holdout:
        return metrics
    fake_count = metrics["fake_examples"]
    fake_correct = metrics["fake_accuracy"] * fake_count
    parts = {}
    for name, dataset in extra_holdout.items():
        parts[name] = part = trainer.evaluate_accuracy(dataset)
        fake_count += part["fake_examples"]
        fake_correct += part["fake_accuracy"] * part["fake_examples"]
    pooled = fake_correct / fake_count if fake_count else 0.0
    out = dict(metrics, fake_accuracy=pooled, fake_accuracy_g_s=metrics["fake_accuracy"],
               accuracy=0.5 * (metrics["real_accuracy"] + pooled),
               examples=metrics["examples"] + fake_count - metrics["fake_examples"],
               fake_examples=fake_count)
    out.update({f"fake_accuracy_{name}": part["fake_accuracy"] for name, part in parts.items()})
    return out
