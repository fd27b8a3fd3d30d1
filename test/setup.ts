import '../tools/polyfills.js'
