"""What mtl_keras runs only on the TensorFlow backend, behind backend-agnostic layers and models.

Nothing here is imported unless Keras runs on TensorFlow: `gradient_plan` says which gradients of
`mtl_keras.layers.conv.conv2d` run as forward convolutions on this CPU, `conv` holds those kernels.
"""
