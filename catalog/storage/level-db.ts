import { Level } from 'level'

/** Keys are text, values raw bytes: Automerge bytes as they are, JSON as UTF-8. */
export type CatalogDb = Level<string, Buffer>

export type BatchOp = { type: 'put'; key: string; value: Buffer } | { type: 'del'; key: string }

export async function openDb(location: string): Promise<CatalogDb> {
  const db = new Level<string, Buffer>(location, { keyEncoding: 'utf8', valueEncoding: 'buffer' })
  await db.open()
  return db
}

export const putJson = (key: string, value: unknown): BatchOp => ({ type: 'put', key, value: Buffer.from(JSON.stringify(value)) })
export const putBytes = (key: string, value: Uint8Array): BatchOp => ({ type: 'put', key, value: Buffer.from(value.buffer, value.byteOffset, value.byteLength) })
export const del = (key: string): BatchOp => ({ type: 'del', key })
