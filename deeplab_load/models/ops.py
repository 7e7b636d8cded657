"""Tensor operations the models share with the layers above them (inference, data, training).

- ``resize_bilinear_align_corners``: TF1's ``resize_bilinear(align_corners=True)``, the resize of
  every DeepLab logit / feature upsampling;
- ``padded_pixels`` / ``PAD_PIXEL_VALUE``: bottom/right padding with the mean pixel, as the
  original eval and export graphs pad (the model normalizes 127.5 to 0);
- ``IGNORE_LABEL``: the label value of pixels that no loss, metric or discriminator input counts
  (padding, unlabelled or void pixels of every data set).
"""
import tensorflow as tf

PAD_PIXEL_VALUE = 127.5
IGNORE_LABEL = 255


def resize_bilinear_align_corners(images, size):
    """TF1 ``resize_bilinear(images, size, align_corners=True)`` on float ``[B,h,w,C]``.

    ``size`` is ``(height, width)`` (ints or an int32 tensor). Returns ``[B,H,W,C]`` in the
    input's float dtype (the op itself always computes float32, so bfloat16/float16 inputs under
    mixed precision get their dtype back and can be concatenated with other branches).
    """
    images = tf.convert_to_tensor(images)
    size = tf.cast(tf.convert_to_tensor(size), tf.int32)
    resized = tf.raw_ops.ResizeBilinear(images=images, size=size, align_corners=True,
                                        half_pixel_centers=False)
    if images.dtype.is_floating and images.dtype != tf.float32:
        resized = tf.cast(resized, images.dtype)
    return resized


def padded_pixels(images, padded_size):
    """(float32 pixels [B,Hp,Wp,3] padded at the bottom/right with PAD_PIXEL_VALUE, H, W) of
    uint8 images [B,H,W,3] (graph code)."""
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    pixels = tf.pad(tf.cast(images, tf.float32), [[0, 0], [0, padded_size[0] - height],
                                                  [0, padded_size[1] - width], [0, 0]],
                    constant_values=PAD_PIXEL_VALUE)
    return pixels, height, width
