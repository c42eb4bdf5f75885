// placeholder: parser tests are being written
