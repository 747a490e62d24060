"""What mtl_keras runs only on the TensorFlow backend, behind backend-agnostic layers and models.

Nothing here is imported unless Keras runs on TensorFlow: `conv` holds the forward-convolution
gradients of `mtl_keras.layers.conv.conv2d`.
"""
