"""What mtl_keras runs only on the TensorFlow backend, behind backend-agnostic layers and models.

Nothing here is imported unless Keras runs on TensorFlow: `gradient_plan` says which gradients of
`mtl_keras.layers.conv.conv2d` run as forward convolutions on this CPU and `conv` holds those
kernels; `meta_transfer_steps` and `pretrain_steps` are the models' train and test steps (a
gradient tape, `tf.distribute`); `memory` refuses a step that cannot fit before it runs. The
same convention holds for JAX (`mtl_keras.jax_backend`): backend code lives in its backend's
package and imports only the library's leaves, never the layers or models it serves.
"""
