"""What mtl_keras runs only on the JAX backend, behind backend-agnostic models: `meta_transfer_steps`
(`MetaTransferModel`'s stateless train and test steps), `pretrain_steps` (`PretrainModel`'s steps
compiled with its augmentation), `compiled` (a model's functions compiled once, its weights as
arguments: the evaluation's). Nothing here is imported unless Keras runs on JAX; like
`mtl_keras.tensorflow_backend`, it imports only the library's leaves (`keras_private`, `inputs`),
never the models it serves.
"""
